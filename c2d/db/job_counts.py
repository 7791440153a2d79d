"""How many jobs there are, by compute environment and status, and how many wait for their engine.

Read by the operator metrics (:mod:`c2d.metrics`) at scrape time: two grouped counts, no row read back.
"""

from __future__ import annotations

from dataclasses import dataclass

from c2d.db.engine_queue import SUBMITTED
from c2d.db.pool import Pool
from c2d.status import JobStatus

IN_PROCESS_ENGINES = ("local",)  # a job they claimed (status 10) is running, not waiting for a cluster


@dataclass(frozen=True)
class JobCounts:
    by_status: dict[tuple[str, int], int]  # (environment, status code) -> jobs, finished ones included
    waiting: dict[tuple[str, str], int]  # (engine, environment) -> jobs not yet started by their engine


def count_jobs(pool: Pool) -> JobCounts:
    """One grouped count over ``jobs`` (every row: its cost grows with the table) and one over the unfinished
    jobs (through the partial index on them). Waiting: queued (status 1, not claimed yet), or claimed by an
    engine that runs them elsewhere (Argo) whose cluster has not accepted them yet (no ``submittedAt``)."""
    with pool.connection() as conn:
        rows = conn.execute("SELECT environment, status, count(*) FROM jobs GROUP BY environment, status").fetchall()
        waiting = conn.execute(
            "SELECT engine, environment, count(*) FROM jobs WHERE date_finished IS NULL AND (status = %s "
            f"OR (status = %s AND NOT engine = ANY(%s) AND NOT details ? '{SUBMITTED}')) "
            "GROUP BY engine, environment",
            (int(JobStatus.WARMING_UP), int(JobStatus.JOB_STARTED), list(IN_PROCESS_ENGINES)),
        ).fetchall()
    return JobCounts(
        by_status={(str(env), int(str(status))): int(str(count)) for env, status, count in rows},
        waiting={(str(engine), str(env)): int(str(count)) for engine, env, count in waiting},
    )
