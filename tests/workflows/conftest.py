"""Fixtures of the workflow tests: a running local engine and a way to submit jobs to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from c2d.db.jobs import JobRecord, JobStore
from c2d.db.pool import Pool
from c2d.environments import ComputeEnvironment
from c2d.settings import Settings
from c2d.stack.stack import Stack
from tests.fileserver import FileServer
from workflows.local.engine import LocalEngine
from workflows.spec import JobSpec

from .jobs import new_job, render

__all__ = ["FileServer", "Jobs"]


@dataclass
class Jobs:
    """Submit jobs the way the provider does (a job row with its Workflow) and wait for them."""

    settings: Settings
    store: JobStore
    engine: LocalEngine | None

    def submit(self, spec: JobSpec, env: ComputeEnvironment) -> str:
        workflow = render(spec, env, self.settings.store_dir)
        self.store.create(new_job(spec, env, workflow, "local"))
        if self.engine is not None:
            self.engine.wake()
        return spec.job_id

    def wait(self, job_id: str, timeout: float = 60, status: int | None = None) -> JobRecord:
        """Until the job is finished (or has ``status``)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            job = self.store.get(job_id)
            assert job is not None
            if job.finished if status is None else job.status == status:
                return job
            time.sleep(0.05)
        job = self.store.get(job_id)
        raise AssertionError(f"job {job_id} still {job.status if job else None} after {timeout} s: {job}")

    def wait_removed(self, job_id: str, timeout: float = 10) -> None:
        """Until the job's folder is gone."""
        end = time.monotonic() + timeout
        while (self.settings.jobs_dir / job_id).exists():
            assert time.monotonic() < end, f"the folder of job {job_id} is still there after {timeout} s"
            time.sleep(0.02)

    def live_log(self, job_id: str) -> Path:
        """The running algorithm's log: on the job's own disk (or in its plain folders, where the host cannot
        make job file systems)."""
        job = self.settings.jobs_dir / job_id
        on_disk = job / "disk" / "data" / "logs" / "algorithm.log"
        return on_disk if (job / "disk.img").exists() else job / "volumes" / "data" / "logs" / "algorithm.log"

    def wait_log(self, job_id: str, text: str, timeout: float = 20) -> None:
        """Until the running algorithm has written ``text`` to its log."""
        end = time.monotonic() + timeout
        while True:
            live = self.live_log(job_id)  # on the job's disk once it is made
            if live.exists() and text in live.read_text():
                return
            assert time.monotonic() < end, f"{text!r} not in the algorithm log of {job_id} while it runs"
            time.sleep(0.05)

    def statuses(self, job_id: str) -> list[int]:
        return [event.status for event in self.store.events(job_id)]

    def stored(self, job_id: str, name: str) -> Path:
        return self.settings.store_dir / job_id / name


@pytest.fixture(scope="module")
def engine(stack: Stack, pool: Pool) -> Iterator[LocalEngine]:
    from c2d.stack.postgres import database_dsn

    with LocalEngine(stack.settings, pool, database_dsn(stack.settings)) as running:
        yield running


@pytest.fixture
def jobs(stack: Stack, pool: Pool, engine: LocalEngine) -> Jobs:
    return Jobs(stack.settings, JobStore(pool), engine)
