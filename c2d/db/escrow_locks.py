"""The Escrow lock of each paid job, from the intent to lock to the claim or the release (``escrow_locks``).

States and who moves them::

    locking --(lock tx landed)--> locked --(claim tx)--> claimed
       |                             '----(release tx)--> released
       '--(no lock was made)--> failed

The start flow writes the intent (:meth:`EscrowLockStore.record_intent`) BEFORE it sends createLock, then marks
``locked`` with the transaction, or ``failed`` when the contract refused (:class:`c2d.exceptions.EscrowError` with
a ``reason``: nothing happened on chain). On any other outcome (no receipt, a crash) the row stays ``locking`` and
:func:`c2d.escrow_settlement.settle` reads the chain. Whoever acts on a lock holds :meth:`exclusive` on its job
(the start flow from the intent until the job row exists, so a settler running meanwhile leaves it alone).

Every ``mark_*`` is a guarded state transition in one statement: a replay of the transition already made returns
the row unchanged; any other move raises :class:`c2d.exceptions.DatabaseError`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import psycopg
from psycopg.rows import dict_row

from c2d.db.pool import Pool
from c2d.exceptions import DatabaseError

LockState = Literal["locking", "locked", "claimed", "released", "failed"]
UNSETTLED: tuple[LockState, ...] = ("locking", "locked")
_ADVISORY_NAMESPACE = 0x0C2D_E5C0  # pg_try_advisory_lock(namespace, hashtext(job_id)): one actor per lock

_COLUMNS = (
    "job_id, chain_id, escrow, token, payer, payee, lock_id, amount_wei, expiry_seconds, from_block, state, "
    "lock_tx, claim_tx, cost_wei, release_tx, reason, created_at, updated_at"
)


@dataclass(frozen=True)
class LockIntent:
    """What the node is about to lock. ``lock_id``: :func:`c2d.chain.escrow.lock_id` of ``job_id``;
    ``expiry_seconds``: createLock's relative expiry; ``from_block``: a block at or before the lock transaction
    (the chain's block number now), where a settler starts looking for the lock's events (None: from 0)."""

    job_id: str
    chain_id: int
    escrow: str
    token: str
    payer: str
    payee: str
    lock_id: int
    amount_wei: int
    expiry_seconds: int
    from_block: int | None = None


@dataclass(frozen=True)
class EscrowLockRecord:
    """One row of ``escrow_locks``. Wei amounts and the lock id are ints; transaction hashes lower-case 0x."""

    job_id: str
    chain_id: int
    escrow: str
    token: str
    payer: str
    payee: str
    lock_id: int
    amount_wei: int
    expiry_seconds: int
    from_block: int | None
    state: LockState
    lock_tx: str | None
    claim_tx: str | None
    cost_wei: int | None
    release_tx: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def settled(self) -> bool:
        return self.state not in UNSETTLED


class EscrowLockStore:
    """Repository of the ``escrow_locks`` table."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def record_intent(self, intent: LockIntent) -> EscrowLockRecord:
        """Write the intent (state ``locking``) before the lock transaction is sent. A job has one lock: a second
        intent for the same job raises DatabaseError."""
        if intent.amount_wei <= 0 or intent.expiry_seconds <= 0:
            raise ValueError("a lock needs an amount and an expiry above 0")
        params = {
            "job_id": intent.job_id,
            "chain_id": intent.chain_id,
            "escrow": intent.escrow,
            "token": intent.token,
            "payer": intent.payer,
            "payee": intent.payee,
            "lock_id": Decimal(intent.lock_id),
            "amount_wei": Decimal(intent.amount_wei),
            "expiry_seconds": intent.expiry_seconds,
            "from_block": intent.from_block,
        }
        columns = ", ".join(params)
        values = ", ".join(f"%({name})s" for name in params)
        try:
            with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute(f"INSERT INTO escrow_locks ({columns}) VALUES ({values}) RETURNING {_COLUMNS}", params)
                row = cur.fetchone()
        except psycopg.errors.UniqueViolation:
            raise DatabaseError(f"job {intent.job_id} already has an escrow lock") from None
        except psycopg.errors.CheckViolation as exc:
            raise DatabaseError(f"escrow lock of job {intent.job_id} refused: {exc.diag.constraint_name}") from exc
        assert row is not None
        return _record(row)

    def mark_locked(self, job_id: str, lock_tx: str | None) -> EscrowLockRecord:
        """``locking`` -> ``locked``. ``lock_tx`` None: the lock was found on chain but not its transaction."""
        return self._move(job_id, "locked", ("locking",), {"lock_tx": _tx(lock_tx)})

    def mark_claimed(self, job_id: str, claim_tx: str, cost_wei: int) -> EscrowLockRecord:
        """``locked`` (or ``locking``, found on chain) -> ``claimed``: ``cost_wei`` taken by ``claim_tx``."""
        if cost_wei < 0:
            raise ValueError("a claim takes 0 wei or more")
        return self._move(job_id, "claimed", UNSETTLED, {"claim_tx": _tx(claim_tx), "cost_wei": Decimal(cost_wei)})

    def mark_released(self, job_id: str, release_tx: str | None, note: str | None = None) -> EscrowLockRecord:
        """``locked`` (or ``locking``) -> ``released``: the whole amount went back to the payer by ``release_tx``
        (None: it is gone from the chain and no transaction of ours was found; ``note`` says why)."""
        return self._move(job_id, "released", UNSETTLED, {"release_tx": _tx(release_tx), "reason": note})

    def mark_failed(self, job_id: str, reason: str) -> EscrowLockRecord:
        """``locking`` -> ``failed``: no lock was made (the contract refused it, or it never reached the chain)."""
        return self._move(job_id, "failed", ("locking",), {"reason": reason})

    def get(self, job_id: str) -> EscrowLockRecord | None:
        with self.pool.connection() as conn:
            return self._get(conn, job_id)

    def unsettled(
        self, chain_id: int | None = None, payee: str | None = None, limit: int = 500
    ) -> list[EscrowLockRecord]:
        """``locking`` and ``locked`` rows, oldest first; of one chain and one payee (any case) when given."""
        query = f"SELECT {_COLUMNS} FROM escrow_locks WHERE state IN ('locking', 'locked')"
        params: list[Any] = []
        if chain_id is not None:
            query += " AND chain_id = %s"
            params.append(chain_id)
        if payee is not None:
            query += " AND lower(payee) = lower(%s)"
            params.append(payee)
        params.append(limit)
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute((query + " ORDER BY created_at LIMIT %s").encode(), params)
            return [_record(row) for row in cur.fetchall()]

    @contextmanager
    def exclusive(self, job_id: str) -> Iterator[bool]:
        """Hold the right to act on ``job_id``'s lock on chain (a session advisory lock on a connection of the
        pool, so a crash gives it up); yields False, at once, when another process or thread holds it. Read
        the row again inside: another holder may have just settled it."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_ADVISORY_NAMESPACE, job_id)
            ).fetchone()
            held = bool(row and row[0])
            try:
                yield held
            finally:
                if held:
                    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_ADVISORY_NAMESPACE, job_id))

    def _move(
        self, job_id: str, state: LockState, allowed: Sequence[LockState], values: dict[str, Any]
    ) -> EscrowLockRecord:
        sets = ", ".join(f"{name} = coalesce(%({name})s, {name})" for name in values)
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                f"UPDATE escrow_locks SET state = %(state)s, {sets}, updated_at = clock_timestamp() "
                f"WHERE job_id = %(job_id)s AND state = ANY(%(allowed)s) RETURNING {_COLUMNS}",
                {"state": state, "job_id": job_id, "allowed": list(allowed), **values},
            )
            row = cur.fetchone()
            if row is not None:
                return _record(row)
            current = self._get(conn, job_id)
        if current is None:
            raise DatabaseError(f"job {job_id} has no escrow lock")
        if current.state == state and all(
            value is None or getattr(current, name) == _plain(value) for name, value in values.items()
        ):
            return current  # the same transition, replayed
        raise DatabaseError(f"escrow lock of job {job_id} is {current.state}; it cannot become {state}")

    @staticmethod
    def _get(conn: psycopg.Connection[Any], job_id: str) -> EscrowLockRecord | None:
        with conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SELECT {_COLUMNS} FROM escrow_locks WHERE job_id = %s", (job_id,))
            row = cur.fetchone()
        return _record(row) if row else None


def _tx(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.lower()
    return value if value.startswith("0x") else "0x" + value


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, Decimal) else value


def _record(row: dict[str, Any]) -> EscrowLockRecord:
    for name in ("lock_id", "amount_wei", "cost_wei"):
        if row[name] is not None:
            row[name] = int(row[name])
    return EscrowLockRecord(**row)
