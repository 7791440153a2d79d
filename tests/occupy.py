"""Room taken in a compute environment without running anything: jobs claimed by an engine that is not running."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from c2d.db.jobs import JobStore, NewJob
from c2d.db.pool import Pool
from c2d.status import JobStatus

ELSEWHERE = "elsewhere"  # no engine of that name runs: its claimed jobs only hold their room


@contextmanager
def occupied(pool: Pool, environment: str, count: int, owner: str = "0x" + "ee" * 20) -> Iterator[list[str]]:
    """``count`` Provider v2.1 jobs of ``environment`` (each holds the per-job maximum) claimed and left running;
    finished at the exit (or before, by :func:`release`)."""
    store = JobStore(pool)
    job_ids = [secrets.token_hex(16) for _ in range(count)]
    for job_id in job_ids:
        store.create(NewJob(job_id=job_id, owner=owner, environment=environment, engine=ELSEWHERE))
        store.transition(job_id, JobStatus.RUNNING_ALGORITHM, source="test")
    try:
        yield job_ids
    finally:
        release(pool, *job_ids)


def release(pool: Pool, *job_ids: str) -> None:
    """Finish occupying jobs: their room is free again (a finished job is left as it is)."""
    store = JobStore(pool)
    for job_id in job_ids:
        store.transition(job_id, JobStatus.JOB_FINISHED, source="test", finished=True, results=[])
