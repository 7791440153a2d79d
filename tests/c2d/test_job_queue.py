"""Who an engine claims next, against the real Postgres server: the environment's room, fair order across
consumers, reservations of jobs that waited long, expiry after the queue wait, concurrent claimers.

Every test has its own environment and engine name, so the session's other jobs never take part."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from c2d.db.job_queue import JobQueue
from c2d.db.job_records import ComputeTerms, JobDetails
from c2d.db.jobs import JobStore, NewJob
from c2d.db.pool import Pool
from c2d.environments import ComputeEnvironment, FreeTier, ResourceTerms
from c2d.status import JobStatus
from tests.helpers import race

ALICE, BOB, CAROL = ("0x" + c * 40 for c in "abc")


class Queue:
    """One environment (2 cores in all, 1 GiB of ram and disk per job, 4 jobs, 1 free job) and an engine name of
    its own; jobs made as the provider makes them."""

    def __init__(self, pool: Pool, **env: object) -> None:
        self.store = JobStore(pool)
        self.queue = JobQueue(pool)
        self.engine = "q-" + secrets.token_hex(4)
        values: dict[str, object] = {
            "id": self.engine,
            "cpu": 2,
            "max_jobs": 4,
            "resources": {"cpu": ResourceTerms(total=2)},
            "free": FreeTier(max_jobs=1),
        }
        self.env = ComputeEnvironment.model_validate(values | env)

    def node_job(self, owner: str, cpu: float, wait: int = 600, free: bool = False, engine: str = "") -> str:
        """A job started through ocean-node's protocol: ``cpu`` cores, 1 GiB, queued for ``wait`` s."""
        resources = {"cpu": cpu, "ram": 1.0, "disk": 1.0}
        terms = ComputeTerms(resources=resources, free=free, maxJobDuration=60, queueMaxWaitTime=wait)
        return self._create(owner, JobDetails(compute=terms), engine)

    def legacy_job(self, owner: str) -> str:
        """A Provider v2.1 job: no terms, it holds the per-job maximum (2 cores)."""
        return self._create(owner, JobDetails())

    def _create(self, owner: str, details: JobDetails, engine: str = "") -> str:
        job_id = secrets.token_hex(16)
        engine = engine or self.engine
        self.store.create(NewJob(job_id=job_id, owner=owner, environment=self.env.id, engine=engine, details=details))
        return job_id

    def claim(self, limit: int = 10, engine: str = "") -> list[str]:
        return [job.job_id for job in self.queue.dispatch(engine or self.engine, [self.env], limit, "test")]

    def finish(self, *job_ids: str) -> None:
        for job_id in job_ids:
            self.store.transition(job_id, JobStatus.JOB_FINISHED, source="test", finished=True, results=[])

    def age(self, job_id: str, seconds: float) -> None:
        """As if the job had been created ``seconds`` earlier."""
        with self.store.pool.connection() as conn:
            conn.execute(
                "UPDATE jobs SET date_created = date_created - make_interval(secs => %s) WHERE job_id = %s",
                (seconds, job_id),
            )

    def status(self, job_id: str) -> tuple[int, str, bool]:
        job = self.store.get(job_id)
        assert job is not None
        return job.status, job.status_text, job.finished

    def close(self) -> None:
        self.finish(*(job.job_id for job in self.store.unfinished(self.engine)))


@pytest.fixture
def q(pool: Pool) -> Iterator[Queue]:
    queue = Queue(pool)
    yield queue
    queue.close()


def test_jobs_beyond_the_totals_wait_and_are_claimed_when_room_frees(q: Queue) -> None:
    first, second, third = (q.node_job(ALICE, 1) for _ in range(3))
    assert q.status(third) == (1, "Job queued", False)  # ocean-node's text of 1
    assert q.claim() == [first, second]  # 2 cores in all
    assert q.claim() == []
    usage = q.queue.usage(q.env)
    assert (usage.running, usage.queued, usage.in_use["cpu"]) == (2, 1, 2.0)
    q.finish(first)
    assert q.claim() == [third]


def test_free_jobs_and_job_slots_are_limits_too(pool: Pool) -> None:
    q = Queue(pool, cpu=1, max_jobs=2, resources={"cpu": ResourceTerms(total=8)})
    try:
        free = [q.node_job(ALICE, 0.5, free=True) for _ in range(2)]
        paid = [q.node_job(BOB, 0.5) for _ in range(2)]
        assert q.claim() == [free[0], paid[0]]  # one free job at once; then two jobs at once
        q.finish(paid[0])
        assert q.claim() == [paid[1]]
        q.finish(free[0])
        assert q.claim() == [free[1]]
    finally:
        q.close()


def test_consumers_take_turns_whoever_queued_first(q: Queue) -> None:
    alice = [q.node_job(ALICE, 1) for _ in range(3)]
    bob = q.node_job(BOB, 1)
    assert q.claim() == [alice[0], bob]  # not alice's second: bob has nothing running
    q.finish(bob)
    carol = q.node_job(CAROL, 1)
    assert q.claim() == [carol]  # alice still runs one: carol, who runs none, goes before her older jobs
    q.finish(alice[0], carol)
    assert q.claim() == [alice[1], alice[2]]


def test_a_big_job_lets_smaller_ones_pass_until_it_has_waited_long_enough(q: Queue) -> None:
    running = q.node_job(CAROL, 1)
    assert q.claim() == [running]
    big = q.node_job(ALICE, 2, wait=3600)
    small = q.node_job(BOB, 1)
    assert q.claim() == [small]  # the big one does not fit: the small one behind it does not wait for it
    q.finish(small)
    q.age(big, q.env.queue_reserve_after)
    later = q.node_job(BOB, 1)
    assert q.claim() == []  # the big one now reserves what it needs: nothing passes it any more
    assert q.queue.usage(q.env).capacity.refusal({"cpu": 1, "ram": 1, "disk": 1}, False) == "Not enough available cpu"
    q.finish(running)
    assert q.claim() == [big]
    q.finish(big)
    assert q.claim() == [later]


def test_a_waiting_job_expires_after_its_queue_wait(q: Queue) -> None:
    running = q.legacy_job(CAROL)  # holds both cores
    assert q.claim() == [running]
    queued = q.node_job(ALICE, 1, wait=30)
    admitted = q.node_job(ALICE, 1, wait=0)  # admitted at once (it raced): it never expires
    legacy = q.legacy_job(BOB)
    for job_id in (queued, admitted, legacy):
        q.age(job_id, 31)
    assert q.claim() == []
    assert q.status(queued) == (2, "Job expired in queue", True)
    assert q.status(admitted) == (1, "Job queued", False)
    assert q.status(legacy) == (1, "Warming up", False)  # Provider v2.1's text, and it waits as long as it takes
    events = q.store.events(queued)
    assert [(e.old_status, e.status, e.source) for e in events] == [(None, 1, "provider"), (1, 2, "test")]
    job = q.store.get(queued)
    assert job is not None and job.results is None and job.date_finished is not None
    q.finish(running)
    assert q.claim() == [admitted]  # admitted first, then the legacy job (2 cores) waits for room
    q.finish(admitted)
    assert q.claim() == [legacy]


def test_an_expiry_happens_even_when_the_engine_has_no_free_worker(q: Queue) -> None:
    running = q.legacy_job(CAROL)
    assert q.claim() == [running]
    queued = q.node_job(ALICE, 1, wait=5)
    q.age(queued, 6)
    assert q.claim(limit=0) == []
    assert q.status(queued)[0] == JobStatus.EXPIRED_IN_QUEUE


def test_concurrent_claimers_never_commit_more_than_the_totals(pool: Pool) -> None:
    """Eight engines (processes) with jobs of one environment claim at once: together they take 3 cores."""
    q = Queue(pool, cpu=1, max_jobs=8, resources={"cpu": ResourceTerms(total=3)})
    engines = [f"{q.engine}-{i}" for i in range(8)]
    try:
        for engine in engines:
            for owner in (ALICE, BOB, CAROL):
                q.node_job(owner, 1, engine=engine)
        for _ in range(3):  # three rounds: each frees the room the last one took
            claims = iter(engines)
            outcomes = race(len(engines), lambda claims=claims: q.claim(limit=4, engine=next(claims)))  # type: ignore[misc]
            claimed = [job_id for outcome in outcomes for job_id in outcome]  # type: ignore[union-attr]
            assert len(claimed) == len(set(claimed)) == 3, outcomes
            q.finish(*claimed)
    finally:
        for engine in engines:
            q.finish(*(job.job_id for job in q.store.unfinished(engine)))
        q.close()
