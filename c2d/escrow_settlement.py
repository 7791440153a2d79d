"""Settle the node's Escrow locks: claim what finished jobs cost, give back the rest, repair after a crash.

:func:`settle` is idempotent and safe to run at every start and periodically, in several processes at once:
each lock is handled under :meth:`EscrowLockStore.exclusive` and re-read there, every state change is a guarded
transition, and the chain is read before any transaction (a lock that is gone is never claimed twice). For each
``locking`` or ``locked`` row of this chain and Escrow:

* ``locking`` (the node died between the intent and the receipt), older than ``grace_seconds``: the lock on chain
  -> ``locked`` (its transaction from the Lock event); no lock and no Lock event -> ``failed``.
* ``locked``, the lock already expired -> ``cancelExpiredLock`` -> ``released``.
* ``locked``, the job finished: ``cost_of(job)`` > 0 -> ``claimLockAndWithdraw(min(cost, locked amount), proof)``
  -> ``claimed`` (or ``released`` if the lock expired while the claim was on its way: the contract cancels);
  cost 0 (e.g. the job failed before its algorithm ran) -> :meth:`Escrow.release` (at once, not at expiry) ->
  ``released``.
* ``locked`` with no job row older than ``grace_seconds`` (the start failed after the lock) -> released.
* a lock that is gone from the chain (settled before a crash, or cancelled by the payer after expiry) -> the
  row takes the outcome of its Claimed / Canceled event.

Then expired locks of the node that no unsettled row owns (a lock that landed after its row was marked failed)
are cancelled, so the payer gets them back. One log line per action.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eth_account.signers.local import LocalAccount

from c2d.chain.escrow import Escrow, Lock, LockEvent
from c2d.chain.signing import ZERO_ADDRESS
from c2d.db.escrow_locks import EscrowLockRecord, EscrowLockStore
from c2d.db.jobs import JobRecord, JobStore
from c2d.exceptions import C2DError, EscrowError

log = logging.getLogger(__name__)

PUBLIC_RESULT_KEYS = ("filename", "filesize", "type")  # never where a result is stored
_SWEEP_KEY = "escrow-orphan-sweep"  # exclusive() key of the sweep (not a job id)


@dataclass
class SettlementReport:
    """What one :func:`settle` run did: job ids per outcome, the orphan lock ids it cancelled, and the errors
    (job id -> message) it left for the next run."""

    locked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    claimed: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    orphans_canceled: list[int] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def job_proof(job: JobRecord) -> bytes:
    """The claim's proof: the job's public status as compact JSON (no result locations), like ocean-node's
    JSON of the job."""
    status = {
        "jobId": job.job_id,
        "owner": job.owner,
        "agreementId": job.agreement_id,
        "environment": job.environment,
        "status": job.status,
        "statusText": job.status_text,
        "dateCreated": f"{job.date_created.timestamp():.6f}",
        "dateFinished": f"{job.date_finished.timestamp():.6f}" if job.date_finished else None,
        "results": [{k: v for k, v in entry.items() if k in PUBLIC_RESULT_KEYS} for entry in job.results or []],
    }
    return json.dumps(status, separators=(",", ":"), sort_keys=True).encode()


def settle(
    locks: EscrowLockStore,
    escrow: Escrow,
    account: LocalAccount,
    jobs: JobStore,
    cost_of: Callable[[JobRecord], int],
    *,
    proof_of: Callable[[JobRecord], bytes] = job_proof,
    grace_seconds: float = 300.0,
    sweep: bool = True,
) -> SettlementReport:
    """Settle every unsettled lock of ``escrow``'s chain and contract held by ``account`` (the node's wallet, the
    payee). ``cost_of``: a finished job's cost in the lock's token, in wei. ``grace_seconds``: how old a
    ``locking`` row, or a ``locked`` row without a job, must be before it is resolved (a start may be under way
    in a process that does not hold :meth:`EscrowLockStore.exclusive`). Errors of one lock (chain, database)
    are logged and reported; the others go on."""
    report = SettlementReport()
    settler = _Settler(locks, escrow, account, jobs, cost_of, proof_of, grace_seconds, report)
    for row in locks.unsettled(escrow.chain.chain_id, account.address):
        if row.escrow.lower() != escrow.address.lower():
            continue
        with locks.exclusive(row.job_id) as held:
            if not held:
                report.busy.append(row.job_id)
                continue
            try:
                settler.settle(row.job_id)
            except C2DError as exc:
                report.errors[row.job_id] = str(exc)
                log.warning("escrow: job %s not settled: %s", row.job_id, exc)
    if sweep:
        with locks.exclusive(_SWEEP_KEY) as held:
            if held:
                settler.sweep()
    return report


class _Settler:
    def __init__(
        self,
        locks: EscrowLockStore,
        escrow: Escrow,
        account: LocalAccount,
        jobs: JobStore,
        cost_of: Callable[[JobRecord], int],
        proof_of: Callable[[JobRecord], bytes],
        grace_seconds: float,
        report: SettlementReport,
    ) -> None:
        self.locks = locks
        self.escrow = escrow
        self.account = account
        self.jobs = jobs
        self.cost_of = cost_of
        self.proof_of = proof_of
        self.grace_seconds = grace_seconds
        self.report = report

    def settle(self, job_id: str) -> None:
        row = self.locks.get(job_id)  # again, under the lock: another settler may have just done it
        if row is None or row.settled:
            return
        if row.payee.lower() != self.account.address.lower():
            raise EscrowError(
                f"the lock of job {job_id} is held by {row.payee}, not by this node's {self.account.address}"
            )
        lock = self.escrow.find_lock(row.lock_id, row.token, row.payer, row.payee)
        if row.state == "locking":
            if self._young(row):
                self.report.pending.append(job_id)
                return
            if lock is None:
                self._gone(row, never_locked_ok=True)
                return
            lock_tx = next((e.tx_hash for e in self._history(row) if e.kind == "lock"), None)
            row = self.locks.mark_locked(job_id, lock_tx)
            self.report.locked.append(job_id)
            log.info("escrow: job %s lock found on chain after a restart: locked (tx %s)", job_id, lock_tx)
        if lock is None:
            self._gone(row, never_locked_ok=False)
            return
        self._settle_locked(row, lock)

    def _settle_locked(self, row: EscrowLockRecord, lock: Lock) -> None:
        job_id = row.job_id
        if lock.expired(self.escrow.chain_time()):
            tx = self.escrow.cancel_expired_lock(self.account, row.lock_id, row.token, row.payer, row.payee)
            self.locks.mark_released(job_id, tx, "the lock had expired")
            self.report.released.append(job_id)
            log.info(
                "escrow: job %s lock expired: cancelled, %d wei back to %s (tx %s)", job_id, lock.amount, row.payer, tx
            )
            return
        job = self.jobs.get(job_id)
        if job is None:
            if self._young(row):
                self.report.pending.append(job_id)
                return
            self._release(row, lock, b"", "no job was created")
            return
        if not job.finished:
            self.report.pending.append(job_id)
            return
        cost = self.cost_of(job)
        if cost <= 0:
            self._release(row, lock, self.proof_of(job), f"job ended at status {job.status} with nothing to pay")
            return
        amount = min(cost, lock.amount)
        tx = self.escrow.claim_lock_and_withdraw(
            self.account, row.lock_id, row.token, row.payer, amount, self.proof_of(job)
        )
        outcome = [e for e in self.escrow.settlement_events(tx) if e.lock_id == row.lock_id]
        if any(e.kind == "claimed" for e in outcome):
            self.locks.mark_claimed(job_id, tx, amount)
            self.report.claimed.append(job_id)
            log.info(
                "escrow: job %s claimed %d wei (cost %d) of %d locked, rest back to %s (tx %s)",
                job_id, amount, cost, lock.amount, row.payer, tx,
            )  # fmt: skip
        else:
            self.locks.mark_released(job_id, tx, "expired before the claim landed: the contract cancelled it")
            self.report.released.append(job_id)
            log.warning(
                "escrow: job %s lock expired before the claim landed: cancelled, nothing paid (tx %s)", job_id, tx
            )

    def _release(self, row: EscrowLockRecord, lock: Lock, proof: bytes, why: str) -> None:
        tx = self.escrow.release(self.account, row.lock_id, row.token, row.payer, proof)
        self.locks.mark_released(row.job_id, tx, why)
        self.report.released.append(row.job_id)
        log.info("escrow: job %s released, %d wei back to %s: %s (tx %s)", row.job_id, lock.amount, row.payer, why, tx)

    def _gone(self, row: EscrowLockRecord, *, never_locked_ok: bool) -> None:
        """The lock is not on chain: what its events say happened."""
        job_id = row.job_id
        history = self._history(row)
        ends = [e for e in history if e.kind in ("claimed", "canceled")]
        if never_locked_ok and not any(e.kind == "lock" for e in history):
            self.locks.mark_failed(job_id, "no lock reached the chain")
            self.report.failed.append(job_id)
            log.info("escrow: job %s no lock on chain after a restart: failed", job_id)
            return
        last = ends[-1] if ends else None
        if last is not None and last.kind == "claimed" and last.amount > 0:
            self.locks.mark_claimed(job_id, last.tx_hash, last.amount)
            self.report.claimed.append(job_id)
            log.info("escrow: job %s was already claimed: %d wei (tx %s)", job_id, last.amount, last.tx_hash)
            return
        note = (
            "already released on chain"
            if last
            else f"gone from the chain, no settlement event since block {row.from_block or 0}"
        )
        self.locks.mark_released(job_id, last.tx_hash if last else None, note)
        self.report.released.append(job_id)
        log.info("escrow: job %s lock %s: released (tx %s)", job_id, note, last.tx_hash if last else None)

    def _history(self, row: EscrowLockRecord) -> list[LockEvent]:
        return self.escrow.history(row.lock_id, row.payer, row.payee, row.from_block or 0)

    def _young(self, row: EscrowLockRecord) -> bool:
        return (datetime.now(UTC) - row.created_at).total_seconds() < self.grace_seconds

    def sweep(self) -> None:
        """Cancel the node's expired locks that no unsettled row owns."""
        owned = {row.lock_id for row in self.locks.unsettled(self.escrow.chain.chain_id, self.account.address)}
        now = self.escrow.chain_time()
        for lock in self.escrow.locks(ZERO_ADDRESS, ZERO_ADDRESS, self.account.address):
            if lock.lock_id in owned or not lock.expired(now):
                continue
            try:
                tx = self.escrow.cancel_expired_lock(
                    self.account, lock.lock_id, lock.token, lock.payer, self.account.address
                )
            except C2DError as exc:
                self.report.errors[f"{lock.lock_id:#x}"] = str(exc)
                log.warning("escrow: orphan lock %#x not cancelled: %s", lock.lock_id, exc)
                continue
            self.report.orphans_canceled.append(lock.lock_id)
            log.info(
                "escrow: orphan lock %#x expired: cancelled, %d wei back to %s (tx %s)",
                lock.lock_id,
                lock.amount,
                lock.payer,
                tx,
            )
