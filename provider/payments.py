"""Escrow payments of ocean-node's protocol: what a job costs, its lock at start, its cost when it ends.

The consumer deposits tokens in Ocean's Escrow contract and authorizes the node. When a paid job starts, the
node checks the consumer's funds and authorization (ocean-node's checks and messages), records the intent in
Postgres, locks the job's maximum cost from its own wallet, and queues the job while it still holds the
lock's row; if the job is not queued after all the lock is given back at once. When the job ends,
:mod:`c2d.escrow_settlement` claims what it cost (:meth:`Payments.cost_of`) and gives back the rest, after a
restart too. Prices: resources x price x started minutes (``c2d.environments.resources_cost``), in the
token's smallest unit; the prices are stored with the job, so a later price change does not change its cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_CEILING, Decimal

from eth_account.signers.local import LocalAccount

from c2d.chain.client import Chain
from c2d.chain.deploy import read_address_file
from c2d.chain.escrow import Escrow, check_payment, lock_id
from c2d.db.escrow_locks import EscrowLockStore, LockIntent
from c2d.db.job_records import JobPaymentRecord
from c2d.db.jobs import JobRecord
from c2d.environments import ComputeEnvironment, resources_cost
from c2d.exceptions import C2DError, EscrowError, EscrowPaymentError
from c2d.settings import Settings
from provider.exceptions import NodeProtocolError
from provider.fees import ProviderFees

log = logging.getLogger(__name__)
ALGORITHM_STEP = "algorithm"  # the step whose run time is charged


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


@dataclass
class Payments:
    """The node's escrow: the Escrow contract of its chain (None where the address file has none), the lock
    records, the node's wallet (the payee, it sends the locks and claims) and the time it allows itself to
    claim after a job's longest run."""

    chain: Chain
    escrow: Escrow | None
    locks: EscrowLockStore
    account: LocalAccount = field(repr=False)
    claim_timeout: int
    token_of: Callable[[ComputeEnvironment], str]  # the token an environment is paid in (ProviderFees.token)
    decimals: dict[str, int] = field(default_factory=dict)  # token -> decimals, read once

    @classmethod
    def create(
        cls, settings: Settings, chain: Chain, fees: ProviderFees, locks: EscrowLockStore, account: LocalAccount
    ) -> Payments:
        """Reads the address file once, at start."""
        addresses = read_address_file(settings.address_file)
        escrow = Escrow(chain, addresses.escrow) if addresses and addresses.escrow else None
        return cls(chain, escrow, locks, account, settings.provider.escrow_claim_timeout, fees.token)

    def payee(self, env: ComputeEnvironment) -> str:
        """Who an environment's escrow locks pay (and its orders are made out to): its ``consumer_address``, or the
        node's own."""
        return env.consumer_address or self.account.address

    def accepted(self, env: ComputeEnvironment, chain_id: int, token: str) -> tuple[str, Escrow]:
        """The environment's token and the chain's escrow, when ``chain_id`` and ``token`` are what it takes; else
        :class:`NodeProtocolError` with ocean-node's message (500, as ocean-node answers)."""
        accepted = self.token_of(env)
        if chain_id != self.chain.chain_id or token.lower() != accepted.lower():
            raise NodeProtocolError(
                f"This compute env does not accept payments on chain: {chain_id} using token {token}", 500
            )
        if self.escrow is None:
            raise NodeProtocolError(f"Cannot handle payments on chainId: {chain_id}", 500)
        return accepted, self.escrow

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

    @contextmanager
    def locked(self, charge: JobCharge, *, queue_wait: float = 0) -> Iterator[JobPaymentRecord]:
        """Lock the job's maximum cost in the escrow from the node's wallet (nothing to lock when it costs 0), and
        hand the payment record to the block that queues the job; if that block raises, the lock is given back.

        Raises :class:`NodeProtocolError` (ocean-node's message) when the token or chain is not the environment's,
        the chain has no escrow, the consumer's funds or authorization do not cover the lock, or the contract
        refuses it; then nothing is locked."""
        accepted, escrow = self.accepted(charge.env, charge.chain_id, charge.token)
        amount = self.job_cost(charge.env, accepted, charge.amounts, charge.seconds)
        record = JobPaymentRecord(
            chainId=charge.chain_id,
            token=accepted,
            escrow=escrow.address,
            amount=str(amount),
            prices=charge.env.prices,
            minJobDuration=charge.env.min_job_duration,
        )
        if amount == 0:
            yield record
            return
        payee = self.payee(charge.env)
        expiry = self.min_lock_seconds(charge.seconds, queue_wait)
        try:
            check_payment(escrow, charge.payer, accepted, payee, amount, expiry)
        except EscrowPaymentError as exc:
            raise NodeProtocolError(str(exc)) from None
        intent = LockIntent(
            charge.job_id,
            charge.chain_id,
            escrow.address,
            accepted,
            charge.payer,
            payee,
            lock_id(charge.job_id),
            amount,
            expiry,
            from_block=self.chain.w3.eth.block_number,
        )
        with self.locks.exclusive(charge.job_id):  # a settler leaves the lock alone until the job row exists
            self.locks.record_intent(intent)
            try:
                tx = escrow.create_lock(self.account, intent.lock_id, accepted, charge.payer, amount, expiry)
            except EscrowError as exc:
                if exc.reason is not None:  # refused before anything was sent
                    self.locks.mark_failed(charge.job_id, exc.reason)
                raise NodeProtocolError(f"Error creating lock: {exc}") from None
            self.locks.mark_locked(charge.job_id, tx)
            record["lockTx"] = tx
            try:
                yield record
            except BaseException:
                self._give_back(intent)
                raise

    def _give_back(self, intent: LockIntent) -> None:
        """The lock of a job that was not queued, back to the payer now (else the settlement does it later)."""
        assert self.escrow is not None
        try:
            tx = self.escrow.release(self.account, intent.lock_id, intent.token, intent.payer)
        except C2DError as exc:
            log.warning("escrow: the lock of unstarted job %s stays until settlement: %s", intent.job_id, exc)
            return
        self.locks.mark_released(intent.job_id, tx, note="the job was not started")

    def cost_of(self, job: JobRecord) -> int:
        """What a finished paid job owes, in its token's smallest unit: its resources at the prices stored at its
        start, for the seconds its algorithm ran (at least the environment's minimum, at most its maximum); 0
        when the algorithm never ran."""
        terms = job.details.get("compute") or {}
        payment = terms.get("payment")
        step = (job.details.get("steps") or {}).get(ALGORITHM_STEP) or {}
        if payment is None or not step.get("startedAt"):
            return 0
        started = datetime.fromisoformat(step["startedAt"])
        ended = datetime.fromisoformat(step["finishedAt"]) if step.get("finishedAt") else job.date_finished
        ran = (ended - started).total_seconds() if ended else 0.0
        seconds = min(max(ran, payment.get("minJobDuration", 0)), terms.get("maxJobDuration", ran))
        cost = resources_cost(payment.get("prices") or {}, terms.get("resources") or {}, seconds)
        return min(self.in_smallest_unit(payment.get("token", ""), cost), int(payment.get("amount", "0")))
