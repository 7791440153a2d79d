"""What happens to a job's results once it is finished: removal, expiry, publication as an asset.

A mixin of :class:`c2d.db.jobs.JobStore` (same ``jobs`` table, same connection pool), kept apart so the
job store stays about jobs running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from c2d.db.job_records import JOB_COLUMNS, JobRecord
from c2d.status import JobStatus

if TYPE_CHECKING:
    from c2d.db.pool import Pool


class JobResults:
    pool: Pool

    def mark_removed(self, job_id: str, *, source: str = "provider", reason: str = "deleted") -> bool:
        """Flag a finished job's results as removed (with an audit event); False when it is unfinished or
        already removed. The status stays: ``removed`` says the results are gone."""
        with self.pool.connection() as conn, conn.transaction():
            row = conn.execute(
                "UPDATE jobs SET removed = 1, updated_at = clock_timestamp() "
                "WHERE job_id = %s AND date_finished IS NOT NULL AND removed = 0 RETURNING status, status_text",
                (job_id,),
            ).fetchone()
            if row is None:
                return False
            status, text = int(str(row[0])), str(row[1])
            self._event(conn, job_id, status, status, text, source, {"removed": reason})
        return True

    def awaiting_publication(self, max_attempts: int, limit: int = 20) -> list[JobRecord]:
        """Finished jobs (70) that asked for their results as a new asset, not published yet."""
        query = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE date_finished IS NOT NULL AND status = %s AND removed = 0 "
            "AND (details->'output'->>'publishOutput')::boolean AND details->'resultAsset'->>'did' IS NULL "
            "AND coalesce((details->'resultAsset'->>'attempts')::int, 0) < %s ORDER BY date_finished LIMIT %s"
        )
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(JobRecord)) as cur:
            cur.execute(query.encode(), (int(JobStatus.JOB_FINISHED), max_attempts, limit))
            return cur.fetchall()

    def result_asset_job(self, did: str) -> str | None:
        """The job whose results the asset ``did`` was published from."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT job_id FROM jobs WHERE details->'resultAsset'->>'did' = %s", (did,)).fetchone()
        return str(row[0]) if row else None

    def keep_results(self, job_id: str) -> None:
        """Results that back a published asset never expire (deleting the job still removes them)."""
        with self.pool.connection() as conn:
            conn.execute("UPDATE jobs SET expiry = NULL, updated_at = clock_timestamp() WHERE job_id = %s", (job_id,))

    def expired(self, limit: int = 100) -> list[JobRecord]:
        """Finished jobs whose results are past their expiry and not removed yet, oldest expiry first."""
        query = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE date_finished IS NOT NULL AND removed = 0 "
            "AND expiry <= clock_timestamp() ORDER BY expiry LIMIT %s"
        )
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(JobRecord)) as cur:
            cur.execute(query.encode(), (limit,))
            return cur.fetchall()

    @staticmethod
    def _event(
        conn: psycopg.Connection[Any],
        job_id: str,
        old_status: int | None,
        status: int,
        text: str,
        source: str,
        detail: dict[str, Any],
    ) -> None:
        conn.execute(
            "INSERT INTO job_events (job_id, old_status, status, status_text, source, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (job_id, old_status, status, text, source, Jsonb(detail)),
        )
