"""What request handlers use: settings, stores and the engine, built once per app and passed down."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Protocol

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import Depends, Request

from c2d.chain.artifacts import Artifacts
from c2d.chain.client import Chain
from c2d.chain.documents import public_key_hex
from c2d.db.escrow_locks import EscrowLockStore
from c2d.db.jobs import JobStore
from c2d.db.nonces import NonceStore
from c2d.db.pool import Pool, database_dsn_of
from c2d.environments import ComputeEnvironment
from c2d.settings import Settings
from provider.fees import ProviderFees
from provider.indexer.store import DdoStore
from provider.payments import Payments
from provider.results import ResultStore
from provider.status_cache import StatusCache
from workflows.livelogs import LiveLogs
from workflows.metrics import EngineMetrics
from workflows.registry import StepRegistry
from workflows.templates import default_registry


class Engine(Protocol):
    """What the API needs of an engine: a nudge when a job is queued or asked to stop, and its metrics (served
    with the provider's)."""

    metrics: EngineMetrics

    def wake(self) -> None: ...

    def stop(self, job_id: str) -> bool: ...


@dataclass
class Services:
    settings: Settings
    pool: Pool
    jobs: JobStore
    nonces: NonceStore
    account: LocalAccount
    chain: Chain
    ddos: DdoStore
    registry: StepRegistry
    fees: ProviderFees
    payments: Payments
    results: ResultStore
    statuses: StatusCache
    engine: Engine | None = None
    logs: LiveLogs | None = None  # the running algorithms' output (computeStreamableLogs); None: not served

    @classmethod
    def create(
        cls, settings: Settings, pool: Pool, engine: Engine | None = None, logs: LiveLogs | None = None
    ) -> Services:
        account: LocalAccount = Account.from_key(settings.provider.private_key.get_secret_value())
        chain = Chain(settings.rpc_url, Artifacts(settings.npm_dir))
        registry = default_registry(settings.engine.step_modules)
        fees = ProviderFees.create(settings, chain, account)
        return cls(
            settings,
            pool,
            JobStore(pool),
            NonceStore(pool),
            account,
            chain,
            DdoStore(pool),
            registry,
            fees,
            Payments.create(settings, chain, fees, EscrowLockStore(pool), account),
            ResultStore(settings),
            StatusCache(database_dsn_of(pool)),
            engine,
            logs,
        )

    @property
    def address(self) -> str:
        return str(self.account.address)

    def payee(self, env: ComputeEnvironment) -> str:
        """Who an environment's orders are made out to and its escrow locks pay: its ``consumer_address``, or the
        node's own."""
        return self.payments.payee(env)

    @property
    def public_key(self) -> str:
        """Uncompressed secp256k1 public key (0x hex): what publishers encrypt DDOs and files to."""
        return public_key_hex(bytes(self.account.key))


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
"""Everything a request handler may use: for handlers that use most of it (initializeCompute, compute)."""


def get_ddos(services: ServicesDep) -> DdoStore:
    return services.ddos


def get_nonces(services: ServicesDep) -> NonceStore:
    return services.nonces


DdosDep = Annotated[DdoStore, Depends(get_ddos)]
"""The indexed DDOs alone: for handlers that only read them (the Aquarius API)."""
NoncesDep = Annotated[NonceStore, Depends(get_nonces)]
"""The request nonces alone."""
