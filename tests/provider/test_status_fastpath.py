"""The status endpoint's fast path answers exactly what the FastAPI route answers, and never stale."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from c2d.db.jobs import JobStore, NewJob
from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from provider.app import create_app, serve_app

PATH = "/api/services/compute"


@pytest.fixture
def app(stack: Stack, pool: Pool) -> FastAPI:
    return create_app(stack.settings, pool, None)


@pytest.fixture
def fast(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(serve_app(app)) as client:  # the lifespan starts the cache's listener
        end = time.monotonic() + 10
        while not app.state.services.statuses.live.is_set():
            assert time.monotonic() < end, "the status cache never connected"
            time.sleep(0.05)
        yield client


def _job(store: JobStore, owner: str, did: str | None = None) -> str:
    job_id = secrets.token_hex(16)
    store.create(
        NewJob(job_id=job_id, owner=owner, environment="e", engine="none", did=did, input_dids=[did] if did else [])
    )
    return job_id


def test_same_answers_as_the_route(app: FastAPI, fast: TestClient, pool: Pool) -> None:
    store = JobStore(pool)
    owner = "0x" + secrets.token_hex(20)
    did = "did:op:" + secrets.token_hex(32)
    first, second = _job(store, owner, did), _job(store, owner)
    store.transition(
        first, 70, source="test", finished=True, results=[{"filename": "a", "filesize": 1, "type": "output"}]
    )
    route = TestClient(app)
    for query in (
        {"consumerAddress": owner},
        {"consumerAddress": owner.upper().replace("0X", "0x")},
        {"consumerAddress": owner, "jobId": second},
        {"consumerAddress": owner, "documentId": did},
        {"consumerAddress": owner, "jobId": "unknown"},
        {"consumerAddress": "0x" + "00" * 20},
        {"consumerAddress": "not-an-address"},
        {"consumerAddress": "0x" + "Ab" * 20},  # mixed case with a wrong checksum
        {},
    ):
        for _ in range(2):  # a miss (read from Postgres), then a hit (from memory)
            answer, expected = fast.get(PATH, params=query), route.get(PATH, params=query)
            assert (answer.status_code, answer.content) == (expected.status_code, expected.content), query
    assert [job["jobId"] for job in fast.get(PATH, params={"consumerAddress": owner}).json()] == [first, second]


def test_a_change_is_seen_at_once(fast: TestClient, pool: Pool) -> None:
    store = JobStore(pool)
    owner = "0x" + secrets.token_hex(20)
    job_id = _job(store, owner)
    assert fast.get(PATH, params={"consumerAddress": owner}).json()[0]["status"] == 1  # now cached
    store.transition(job_id, 40, source="test")
    newer = _job(store, owner)

    def seen() -> list[tuple[str, int]]:
        return [(job["jobId"], job["status"]) for job in fast.get(PATH, params={"consumerAddress": owner}).json()]

    end = time.monotonic() + 5
    while seen() != [(job_id, 40), (newer, 1)]:
        assert time.monotonic() < end, f"the cached statuses never changed: {seen()}"
        time.sleep(0.01)
