"""The waiting jobs in Postgres: claimed by the engines under one lock, expired after their queue wait, counted
for the API. The rules (what a job holds, the claim order, expiry) are :mod:`c2d.db.capacity`'s."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

import psycopg
from psycopg.rows import class_row

from c2d.db.capacity import QueueEntry, Usage, expired, plan_claims, usage
from c2d.db.job_records import JOB_COLUMNS, ComputeTerms, JobRecord
from c2d.db.pool import Pool
from c2d.environments import ComputeEnvironment
from c2d.status import JobStatus

CLAIM_LOCK = 0x6332_7175  # "c2qu": pg_advisory_xact_lock of every claim and expiry, in every process
_ENTRY = (
    "SELECT job_id, lower(owner), environment, engine, date_created, status <> %(queued)s, details->'compute' "
    "FROM jobs WHERE date_finished IS NULL"
)


class JobQueue:
    """Repository of the waiting jobs (status 1) of the ``jobs`` table and of their claims."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def usage(self, env: ComputeEnvironment) -> Usage:
        """``env`` now: what its jobs hold, how many run and wait, what a new job may take."""
        with self.pool.connection() as conn:
            now, entries = _entries(conn, env.id)
        return usage(env, entries, now)

    def dispatch(
        self, engine: str, environments: Sequence[ComputeEnvironment], limit: int, source: str
    ) -> list[JobRecord]:
        """End the waiting jobs of ``engine`` whose queue wait is over (status 2), then claim up to ``limit``
        of its waiting jobs (status 10) in :func:`c2d.db.capacity.plan_claims`'s order, each with an event.
        One transaction under an advisory lock that every claimer takes: two engines or processes never claim
        the same room. Returns the claimed jobs in that order (``limit`` <= 0: none, but still expires)."""
        with self.pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
            now, entries = _entries(conn)
            gone = {e.job_id for e in entries if e.engine == engine and expired(e, now)}
            if gone:
                _expire(conn, sorted(gone), source)
            live = [e for e in entries if e.job_id not in gone]
            picks = plan_claims(environments, live, engine, limit, now) if limit > 0 else []
            if not picks:
                return []
            claimed = {record.job_id: record for record in _claim(conn, [e.job_id for e in picks], source)}
        return [claimed[e.job_id] for e in picks if e.job_id in claimed]

    def end_waiting(self, job_id: str, source: str) -> bool:
        """A job stopped while it waits for room ends now: 70 "Job finished", no results (its algorithm never ran,
        so an escrow lock is given back whole). False when it is not waiting (claimed meanwhile: the engine stops
        it)."""
        with self.pool.connection() as conn:
            return bool(_end_waiting(conn, [job_id], JobStatus.JOB_FINISHED, source))


def _entries(conn: psycopg.Connection[Any], environment: str | None = None) -> tuple[datetime, list[QueueEntry]]:
    """The database's clock and every unfinished job (of ``environment``)."""
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    query = _ENTRY + (" AND environment = %(env)s" if environment is not None else "")
    rows = conn.execute(query.encode(), {"queued": int(JobStatus.WARMING_UP), "env": environment}).fetchall()
    entries = [
        QueueEntry(
            job_id=str(job_id),
            owner=str(owner),
            environment=str(env),
            engine=str(engine),
            created=cast(datetime, created),
            claimed=bool(claimed),
            terms=cast(ComputeTerms | None, terms),
        )
        for job_id, owner, env, engine, created, claimed, terms in rows
    ]
    return cast(datetime, row[0]), entries


def _expire(conn: psycopg.Connection[Any], job_ids: list[str], source: str) -> None:
    """Waiting jobs -> 2 "Job expired in queue", finished without results, with an event each."""
    _end_waiting(conn, job_ids, JobStatus.EXPIRED_IN_QUEUE, source)


def _end_waiting(conn: psycopg.Connection[Any], job_ids: list[str], status: JobStatus, source: str) -> list[str]:
    """Those of ``job_ids`` still waiting -> ``status``, finished without results (the results' expiry as
    :meth:`JobStore.transition` sets it), with an event each; the ids it ended (a job claimed meanwhile is not)."""
    rows = conn.execute(
        "WITH ended AS (UPDATE jobs SET status = %(status)s, status_text = %(text)s, "
        "  date_finished = clock_timestamp(), updated_at = clock_timestamp(), "
        "  expiry = clock_timestamp() + (jobs.expiry - jobs.date_created) "
        "  WHERE job_id = ANY(%(ids)s) AND status = %(queued)s AND date_finished IS NULL "
        "  RETURNING job_id) "
        "INSERT INTO job_events (job_id, old_status, status, status_text, source, detail) "
        "SELECT job_id, %(queued)s, %(status)s, %(text)s, %(source)s, '{}'::jsonb "
        "FROM ended RETURNING job_id",
        {
            "ids": job_ids,
            "status": int(status),
            "text": status.text,
            "queued": int(JobStatus.WARMING_UP),
            "source": source,
        },
    ).fetchall()
    return [str(row[0]) for row in rows]


def _claim(conn: psycopg.Connection[Any], job_ids: list[str], source: str) -> list[JobRecord]:
    started = JobStatus.JOB_STARTED
    with conn.cursor(row_factory=class_row(JobRecord)) as cur:
        cur.execute(
            "WITH claimed AS (UPDATE jobs SET status = %(status)s, status_text = %(text)s, "
            "  updated_at = clock_timestamp() "
            "  WHERE job_id = ANY(%(ids)s) AND status = %(queued)s AND date_finished IS NULL "
            f"  RETURNING {JOB_COLUMNS}), "
            "events AS (INSERT INTO job_events (job_id, old_status, status, status_text, source, detail) "
            "  SELECT job_id, %(queued)s, %(status)s, %(text)s, %(source)s, '{}'::jsonb FROM claimed) "
            f"SELECT {JOB_COLUMNS} FROM claimed",
            {
                "ids": job_ids,
                "queued": int(JobStatus.WARMING_UP),
                "status": int(started),
                "text": started.text,
                "source": source,
            },
        )
        return cur.fetchall()
