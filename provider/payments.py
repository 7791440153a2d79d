"""Escrow payments of ocean-node's protocol: what a job costs in a token, how long its lock must last.

The consumer deposits tokens in Ocean's Escrow contract and authorizes the node; the node locks a job's
maximum cost when the job starts and claims what the job really cost when it ends (the locking and the
settlement: :mod:`c2d.escrow_settlement`). This module prices: resources x price x started minutes
(:meth:`c2d.environments.ComputeEnvironment.cost`), in the token's smallest unit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from web3 import Web3

from c2d.chain.client import Chain
from c2d.chain.deploy import read_address_file
from c2d.db.job_records import JobPaymentRecord
from c2d.environments import ComputeEnvironment
from c2d.settings import Settings
from provider.exceptions import NodeProtocolError
from provider.fees import ProviderFees

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobCharge:
    """What a paid job is charged for: its resources for at most ``seconds``, in ``token`` on ``chain_id``, paid by
    ``payer`` (the consumer) to the environment's address."""

    job_id: str
    env: ComputeEnvironment
    payer: str
    token: str
    chain_id: int
    amounts: dict[str, float]
    seconds: int


@dataclass(frozen=True)
class Payments:
    """The node's escrow terms: the Escrow contract of its chain (None where the address file has none) and the
    time it allows itself to claim after a job's longest run."""

    chain: Chain
    escrow_address: str | None
    claim_timeout: int
    token_of: Callable[[ComputeEnvironment], str]  # the token an environment is paid in (ProviderFees.token)
    decimals: dict[str, int] = field(default_factory=dict, compare=False)  # token -> decimals, read once

    @classmethod
    def create(cls, settings: Settings, chain: Chain, fees: ProviderFees) -> Payments:
        """Reads the address file once, at start."""
        addresses = read_address_file(settings.address_file)
        escrow = (addresses.model_extra or {}).get("Escrow") if addresses else None
        address = Web3.to_checksum_address(str(escrow)) if escrow else None
        return cls(chain, address, settings.provider.escrow_claim_timeout, fees.token)

    def min_lock_seconds(self, max_job_duration: float, queue_wait: float = 0) -> int:
        """How long a job's lock must last: its longest run, its longest wait in the queue, and the claim."""
        return int(max_job_duration + queue_wait) + self.claim_timeout

    def in_smallest_unit(self, token: str, amount: Decimal) -> int:
        """``amount`` tokens in the token's smallest unit (wei for 18 decimals), rounded up."""
        key = token.lower()
        if key not in self.decimals:
            self.decimals[key] = int(self.chain.contract("ERC20Template", token).functions.decimals().call())
        return int((amount * (Decimal(10) ** self.decimals[key])).to_integral_value(ROUND_CEILING))

    def job_cost(self, env: ComputeEnvironment, token: str, amounts: dict[str, float], seconds: float) -> int:
        """What a job of ``amounts`` running ``seconds`` costs, in ``token``'s smallest unit."""
        return self.in_smallest_unit(token, env.cost(amounts, seconds))

    def lock(self, charge: JobCharge, *, queue_wait: float = 0) -> JobPaymentRecord:
        """Lock the job's maximum cost in the escrow, from the node's wallet (nothing to lock when it costs 0).
        Raises :class:`NodeProtocolError` (ocean-node's message) when the token or chain is not the
        environment's, the chain has no escrow, or the consumer's funds or authorization do not cover it."""
        accepted = self.token_of(charge.env)
        if charge.chain_id != self.chain.chain_id or charge.token.lower() != accepted.lower():
            raise NodeProtocolError(
                f"This compute env does not accept payments on chain: {charge.chain_id} using token {charge.token}",
                500,
            )
        if self.escrow_address is None:
            raise NodeProtocolError(f"Cannot handle payments on chainId: {charge.chain_id}", 500)
        amount = self.job_cost(charge.env, accepted, charge.amounts, charge.seconds)
        record = JobPaymentRecord(
            chainId=charge.chain_id, token=accepted, escrow=self.escrow_address, amount=str(amount)
        )
        if amount == 0:
            return record
        raise NodeProtocolError("escrow locks are not wired yet", 500)

    def release_unstarted(self, job_id: str) -> None:
        """Give back the lock of a job that was not queued after all (nothing when none was made)."""
        log.info("no escrow lock to release for job %s", job_id)
