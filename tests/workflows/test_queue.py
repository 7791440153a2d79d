"""The engines claim by room and in fair order, and expire what waited too long: the node's environment (4 cores,
1 per Provider v2.1 job) in the session's Postgres; the local engine with real sandboxes, the argo engine without
a cluster (a job it claimed would be submitted: any call to the cluster fails the test)."""

from __future__ import annotations

import secrets
import time
from typing import Any, cast

from c2d.db.job_records import ComputeTerms, JobDetails
from c2d.db.jobs import JobStore, NewJob
from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from c2d.status import JobStatus
from tests.occupy import occupied, release
from workflows.argo.engine import ArgoEngine
from workflows.argo.kube import KubeClient

from .conftest import FileServer, Jobs
from .jobs import job_spec

ALICE, BOB = "0x" + "a1" * 20, "0x" + "b0" * 20


def test_jobs_wait_for_room_and_the_consumer_running_least_goes_first(
    jobs: Jobs, pool: Pool, stack: Stack, file_server: FileServer
) -> None:
    env = stack.settings.environments[0]
    file_server.files["/queue.csv"] = b"x"
    url = f"{file_server.url}/queue.csv"
    with occupied(pool, env.id, 4, owner=ALICE) as holders:  # alice holds the whole environment
        first, second = (jobs.submit(job_spec("print(1)", [url], owner=ALICE), env) for _ in range(2))
        bob = jobs.submit(job_spec("print(2)", [url], owner=BOB), env)
        time.sleep(1)  # the engine polls every 0.2 s: nothing is claimed while there is no room
        for job_id in (first, second, bob):
            job = jobs.store.get(job_id)
            assert job is not None and (job.status, job.status_text) == (1, "Warming up"), job
        release(pool, holders[0])  # room for one job at a time: alice still runs 3
        done = {job_id: jobs.wait(job_id) for job_id in (first, second, bob)}
    assert {job.status for job in done.values()} == {70}
    claimed = {job_id: next(e.at for e in jobs.store.events(job_id) if e.status == 10) for job_id in done}
    assert sorted(claimed, key=claimed.__getitem__) == [bob, first, second]  # bob first, though he came last
    assert claimed[first] >= (done[bob].date_finished or claimed[bob])  # one at a time
    assert claimed[second] >= (done[first].date_finished or claimed[first])


def status(store: JobStore, job_id: str) -> tuple[int, str]:
    job = store.get(job_id)
    assert job is not None
    return job.status, job.status_text


class NoCluster:
    """The argo engine's client where no job may reach a cluster: any call is a test failure."""

    namespace = "c2d"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the argo engine called the cluster ({name})")


def test_the_argo_engine_leaves_jobs_without_room_queued_and_expires_them(stack: Stack, pool: Pool) -> None:
    env = stack.settings.environments[0]
    store = JobStore(pool)
    engine = ArgoEngine(stack.settings, pool, cast(KubeClient, NoCluster()))
    terms = ComputeTerms(resources={"cpu": 0.5, "ram": 0.5, "disk": 0.5}, free=True, queueMaxWaitTime=2)
    queued, legacy = secrets.token_hex(16), secrets.token_hex(16)
    try:
        with occupied(pool, env.id, 4):
            for job_id, details in ((queued, JobDetails(compute=terms)), (legacy, JobDetails())):
                store.create(NewJob(job_id=job_id, owner=ALICE, environment=env.id, engine="argo", details=details))
            engine.dispatch_once()
            assert [status(store, job_id) for job_id in (queued, legacy)] == [(1, "Job queued"), (1, "Warming up")]
            time.sleep(2.2)
            engine.dispatch_once()
        assert [status(store, j) for j in (queued, legacy)] == [(2, "Job expired in queue"), (1, "Warming up")]
        assert [e.source for e in store.events(queued)] == ["provider", "argo-engine"]
    finally:
        engine.submitters.shutdown()
        store.transition(legacy, JobStatus.JOB_FINISHED, source="test", finished=True, results=[])
