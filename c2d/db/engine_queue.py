"""What a remote engine (Argo) still has to do for its jobs, read from and recorded in Postgres.

Each action leaves a timestamp in ``jobs.details`` (``submittedAt``, ``shutdownSentAt``,
``workflowDeletedAt``) once the cluster has accepted it, so a crashed engine simply finds the
same work again at its next start: nothing is kept only in memory.
"""

from __future__ import annotations

from datetime import UTC, datetime

from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from c2d.db.jobs import JOB_COLUMNS, JobRecord
from c2d.db.pool import Pool
from c2d.status import JobStatus

SUBMITTED = "submittedAt"
SHUTDOWN_SENT = "shutdownSentAt"
WORKFLOW_DELETED = "workflowDeletedAt"


class EngineQueue:
    def __init__(self, pool: Pool, engine: str) -> None:
        self.pool = pool
        self.engine = engine

    def to_submit(self, limit: int) -> list[JobRecord]:
        """Claimed jobs (status 10) whose Workflow the cluster has not accepted yet, oldest first."""
        query = (
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE engine = %s AND status = %s AND date_finished IS NULL "
            f"AND NOT details ? '{SUBMITTED}' ORDER BY date_created LIMIT %s"
        )
        with self.pool.connection() as conn, conn.cursor(row_factory=class_row(JobRecord)) as cur:
            cur.execute(query.encode(), (self.engine, int(JobStatus.JOB_STARTED), limit))
            return cur.fetchall()

    def to_stop(self) -> list[tuple[str, str]]:
        """(job id, workflow name) of submitted, unfinished jobs with a stop request not yet sent."""
        return self._workflows(
            f"stopreq <> 0 AND date_finished IS NULL AND details ? '{SUBMITTED}' AND NOT details ? '{SHUTDOWN_SENT}'"
        )

    def to_delete(self) -> list[tuple[str, str]]:
        """(job id, workflow name) of removed jobs whose Workflow object may still exist."""
        return self._workflows(f"removed = 1 AND details ? '{SUBMITTED}' AND NOT details ? '{WORKFLOW_DELETED}'")

    def _workflows(self, condition: str) -> list[tuple[str, str]]:
        """Jobs of this engine matching ``condition`` (a constant of this module, never input)."""
        with self.pool.connection() as conn:
            query = f"SELECT job_id, workflow_name FROM jobs WHERE engine = %s AND {condition}"
            rows = conn.execute(query.encode(), (self.engine,)).fetchall()
        return [(str(job_id), str(name)) for job_id, name in rows]

    def mark(self, job_id: str, key: str, extra: dict[str, object] | None = None) -> None:
        details = {key: datetime.now(UTC).isoformat(), **(extra or {})}
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE jobs SET details = details || %s, updated_at = clock_timestamp() WHERE job_id = %s",
                (Jsonb(details), job_id),
            )
