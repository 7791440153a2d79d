"""Jobs, their status transitions (with an audit event each) and the orders they consumed."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from c2d.db.job_records import (
    JOB_COLUMNS,
    JOB_ID,
    JobDetails,
    JobEvent,
    JobRecord,
    NewJob,
    ResultEntry,
    UsedOrder,
)
from c2d.db.job_results import JobResults
from c2d.db.pool import Pool
from c2d.exceptions import DatabaseError, OrderAlreadyUsedError
from c2d.status import JobStatus, waiting_text

__all__ = ["JOB_COLUMNS", "JobDetails", "JobEvent", "JobRecord", "JobStore", "NewJob", "ResultEntry", "UsedOrder"]

# The statuses a job went through (``%(chain)s``: a JSON list of [code, text], in order), each with the
# one before it; with a ``changed`` CTE that returns the row's old status and text, CHANGED_IN_CHAIN
# selects those that are a change (an event each).
CHAIN = (
    "chain AS (SELECT n, (item->>0)::int AS status, item->>1 AS text, "
    "  lag((item->>0)::int) OVER (ORDER BY n) AS prev_status, lag(item->>1) OVER (ORDER BY n) AS prev_text "
    "  FROM jsonb_array_elements(%(chain)s) WITH ORDINALITY AS items(item, n))"
)
CHANGED_IN_CHAIN = "(coalesce(prev_status, old_status), coalesce(prev_text, old_text)) IS DISTINCT FROM (status, text)"


class JobStore(JobResults):
    """Repository of the ``jobs``, ``job_events`` and ``used_orders`` tables."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def create(self, job: NewJob, orders: Sequence[UsedOrder] = (), source: str = "provider") -> JobRecord:
        """Insert the job (status 1, waiting for its engine: :mod:`c2d.db.job_queue`), claim its orders and write
        its first event, atomically (without orders: one statement)."""
        status = JobStatus.WARMING_UP
        params = {
            "job_id": job.job_id,
            "owner": job.owner,
            "did": job.did,
            "input_dids": Jsonb(list(job.input_dids)),
            "algo_did": job.algo_did,
            "agreement_id": job.agreement_id,
            "chain_id": job.chain_id,
            "environment": job.environment,
            "status": int(status),
            "status_text": waiting_text(node_protocol="compute" in job.details),
            "engine": job.engine,
            "workflow_name": job.workflow_name,
            "workflow": Jsonb(job.workflow) if job.workflow is not None else None,
            "expiry": job.expiry,
            "details": Jsonb(job.details),
        }
        columns = ", ".join(params)
        values = ", ".join(f"%({name})s" for name in params)
        with self.pool.connection() as conn:
            atomic = conn.transaction() if orders else contextlib.nullcontext()
            with atomic, conn.cursor(row_factory=class_row(JobRecord)) as cur:
                cur.execute(
                    f"WITH job AS (INSERT INTO jobs ({columns}) VALUES ({values}) RETURNING {JOB_COLUMNS}), "
                    "event AS (INSERT INTO job_events (job_id, old_status, status, status_text, source, detail) "
                    "  SELECT job_id, NULL, status, status_text, %(source)s, '{}'::jsonb FROM job) "
                    "SELECT * FROM job",
                    params | {"source": source},
                )
                record = cur.fetchone()
                for order in orders:
                    self._claim(conn, job.job_id, order)
        assert record is not None
        return record

    @staticmethod
    def _claim(conn: psycopg.Connection[Any], job_id: str, order: UsedOrder) -> None:
        try:
            with conn.transaction():  # savepoint: turn the violation into our error
                conn.execute(
                    "INSERT INTO used_orders (chain_id, tx_hash, job_id, role) VALUES (%s, %s, %s, %s)",
                    (order.chain_id, order.normalized_hash, job_id, order.role),
                )
        except psycopg.errors.UniqueViolation:
            raise OrderAlreadyUsedError(
                f"order {order.normalized_hash} on chain {order.chain_id} was already used to start a job"
            ) from None

    def order_used(self, chain_id: int, tx_hash: str) -> bool:
        with self.pool.connection() as conn:
            row = conn.execute(
                "SELECT 1 FROM used_orders WHERE chain_id = %s AND tx_hash = %s",
                (chain_id, UsedOrder(chain_id, tx_hash).normalized_hash),
            ).fetchone()
        return row is not None

    def get(self, job_id: str) -> JobRecord | None:
        if not JOB_ID.match(job_id):  # no such job (and nothing to send the database, like a NUL byte)
            return None
        with self.pool.connection() as conn:
            return self._get(conn, job_id)

    @staticmethod
    def _get(conn: psycopg.Connection[Any], job_id: str) -> JobRecord | None:
        with conn.cursor(row_factory=class_row(JobRecord)) as cur:
            cur.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = %s", (job_id,))
            return cur.fetchone()

    def find(self, owner: str, job_id: str | None = None, did: str | None = None) -> list[JobRecord]:
        """Jobs of ``owner`` (case-insensitive), optionally one job or one dataset, oldest first."""
        if "\x00" in owner + (job_id or "") + (did or "") or (job_id and not JOB_ID.match(job_id)):
            return []  # nothing could match (and the database refuses NUL bytes)
        query = f"SELECT {JOB_COLUMNS} FROM jobs WHERE lower(owner) = lower(%s)"
        params: list[Any] = [owner]
        if job_id:
            query += " AND job_id = %s"
            params.append(job_id)
        if did:
            query += " AND (did = %s OR input_dids ? %s)"
            params.extend([did, did])
        query += " ORDER BY date_created"
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(JobRecord)) as cur:
            cur.execute(query.encode(), params)
            return cur.fetchall()

    def unfinished(self, engine: str | None = None) -> list[JobRecord]:
        query = f"SELECT {JOB_COLUMNS} FROM jobs WHERE date_finished IS NULL"
        params: list[Any] = []
        if engine:
            query += " AND engine = %s"
            params.append(engine)
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(JobRecord)) as cur:
            cur.execute((query + " ORDER BY date_created").encode(), params)
            return cur.fetchall()

    def transition(
        self,
        job_id: str,
        status: JobStatus | int,
        *,
        source: str,
        text: str | None = None,
        finished: bool = False,
        results: list[ResultEntry] | None = None,
        stopreq: int | None = None,
        detail: dict[str, Any] | None = None,
        went_through: Sequence[tuple[int, str]] = (),
    ) -> bool:
        """Move an unfinished job to ``status`` (and, ``finished``, end it with ``results``); write an event.
        Returns False when nothing changed. An engine's progress between steps goes through :meth:`advance`.

        ``went_through``: (code, text) the job went through first, in order, not written yet (an event for each
        change among them). Idempotent: replaying a transition the job already made changes nothing, and
        a finished job is never changed again (its final state is final).
        """
        code = int(status)
        status_text = text if text is not None else JobStatus(code).text
        chain = [*([int(c), t] for c, t in went_through), [code, status_text]]
        with self.pool.connection() as conn:
            row = conn.execute(
                "WITH old AS (SELECT status, status_text, date_finished FROM jobs WHERE job_id = %(id)s FOR UPDATE), "
                "changed AS (UPDATE jobs SET status = %(status)s, status_text = %(text)s, "
                "  updated_at = clock_timestamp(), "
                "  date_finished = CASE WHEN %(finished)s THEN clock_timestamp() ELSE jobs.date_finished END, "
                # results are kept for the environment's storage expiry after the job ends
                "  expiry = CASE WHEN %(finished)s THEN clock_timestamp() + (jobs.expiry - jobs.date_created) "
                "    ELSE jobs.expiry END, "
                "  results = coalesce(%(results)s, jobs.results), stopreq = coalesce(%(stopreq)s, jobs.stopreq), "
                "  details = jobs.details || %(detail)s "
                "  FROM old WHERE jobs.job_id = %(id)s AND old.date_finished IS NULL AND (%(finished)s "
                "    OR %(has_results)s OR %(last)s > 1 "
                "    OR (old.status, old.status_text) IS DISTINCT FROM (%(status)s, %(text)s)) "
                "  RETURNING old.status AS old_status, old.status_text AS old_text), "
                f"{CHAIN}, "
                "event AS (INSERT INTO job_events (job_id, old_status, status, status_text, source, detail) "
                "  SELECT %(id)s, coalesce(prev_status, old_status), status, text, %(source)s, "
                "    CASE WHEN n = %(last)s THEN %(detail)s ELSE '{}'::jsonb END "
                f"  FROM changed, chain WHERE n = %(last)s OR {CHANGED_IN_CHAIN} ORDER BY n) "
                "SELECT (SELECT count(*) FROM old), (SELECT count(*) FROM changed)",
                {
                    "id": job_id,
                    "status": code,
                    "text": status_text,
                    "finished": finished,
                    "results": Jsonb(results) if results is not None else None,
                    "has_results": results is not None,
                    "stopreq": stopreq,
                    "detail": Jsonb(detail or {}),
                    "source": source,
                    "chain": Jsonb(chain),
                    "last": len(chain),
                },
            ).fetchone()
        if row is None or not row[0]:
            raise DatabaseError(f"job {job_id} does not exist")
        return bool(row[1])

    def advance(self, job_id: str, statuses: Sequence[tuple[int, str]], details: dict[str, Any], source: str) -> None:
        """An engine's progress on an unfinished job, in one statement: ``details`` merged in, the status set to
        the last of ``statuses`` (the (code, text) the job went through since the previous call, in order)
        and an event written for each change among them. A finished job is left alone."""
        if not statuses:
            raise ValueError("mirror needs at least one status")
        chain = [[int(code), text] for code, text in statuses]
        with self.pool.connection() as conn:
            conn.execute(
                "WITH old AS (SELECT status, status_text FROM jobs "
                "  WHERE job_id = %(id)s AND date_finished IS NULL FOR UPDATE), "
                "changed AS (UPDATE jobs SET details = jobs.details || %(details)s, status = %(status)s, "
                "  status_text = %(text)s, updated_at = clock_timestamp() FROM old WHERE jobs.job_id = %(id)s "
                "  RETURNING old.status AS old_status, old.status_text AS old_text), "
                f"{CHAIN} "
                "INSERT INTO job_events (job_id, old_status, status, status_text, source, detail) "
                "SELECT %(id)s, coalesce(prev_status, old_status), status, text, %(source)s, '{}'::jsonb "
                f"FROM changed, chain WHERE {CHANGED_IN_CHAIN} ORDER BY n",
                {
                    "id": job_id,
                    "details": Jsonb(details),
                    "status": chain[-1][0],
                    "text": chain[-1][1],
                    "chain": Jsonb(chain),
                    "source": source,
                },
            )

    def stop_requests(self, job_ids: Sequence[str]) -> dict[str, int]:
        """``stopreq`` of those unfinished jobs that have one."""
        if not job_ids:
            return {}
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, stopreq FROM jobs WHERE job_id = ANY(%s) AND stopreq <> 0 AND date_finished IS NULL",
                (list(job_ids),),
            ).fetchall()
        return {str(job_id): int(str(stopreq)) for job_id, stopreq in rows}

    def request_stop(self, job_id: str, stopreq: int) -> bool:
        """Flag an unfinished job for stopping; False when it is finished or already flagged."""
        with self.pool.connection() as conn:
            cur = conn.execute(
                "UPDATE jobs SET stopreq = %s, updated_at = clock_timestamp() "
                "WHERE job_id = %s AND date_finished IS NULL AND stopreq = 0",
                (stopreq, job_id),
            )
            return cur.rowcount == 1

    def update_details(self, job_id: str, details: dict[str, Any]) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE jobs SET details = details || %s, updated_at = clock_timestamp() WHERE job_id = %s",
                (Jsonb(details), job_id),
            )

    def events(self, job_id: str) -> list[JobEvent]:
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(JobEvent)) as cur:
            cur.execute(
                "SELECT id, job_id, at, old_status, status, status_text, source, detail "
                "FROM job_events WHERE job_id = %s ORDER BY id",
                (job_id,),
            )
            return cur.fetchall()
