"""The status endpoint's fast path answers exactly what the FastAPI route answers, and never stale."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from c2d.chain.signing import sign_message
from c2d.db.jobs import JobStore, NewJob
from c2d.db.nonces import NonceStore
from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from provider.app import create_app, serve_app
from provider.fastpath import StatusFastPath
from provider.services import Services
from tests.helpers import fresh_nonce

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


def _signed(account: LocalAccount, message: str) -> dict[str, str]:
    nonce = fresh_nonce()
    return {"nonce": nonce, "signature": sign_message(account.key.hex(), message + nonce)}


def _published_job(store: JobStore, owner: str) -> tuple[str, str, str]:
    """A finished job of ``owner`` whose results were published as an asset: (job id, dataset did, asset did)."""
    did, asset = "did:op:" + secrets.token_hex(32), "did:op:" + secrets.token_hex(32)
    job_id = _job(store, owner, did)
    store.transition(
        job_id, 70, source="test", finished=True, results=[{"filename": "a", "filesize": 1, "type": "output"}]
    )
    store.update_details(job_id, {"resultAsset": {"did": asset, "owner": owner}})
    return job_id, did, asset


def test_signed_requests_are_verified_below_fastapi(app: FastAPI, pool: Pool) -> None:
    """ocean.py signs its status requests (consumer + jobId + documentId + nonce): the fast path verifies them
    itself, consumes the nonce in Postgres, and refuses a forged or replayed signature with Ocean's 400."""

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        raise AssertionError(f"the FastAPI route was asked: {scope['query_string']!r}")

    services: Services = app.state.services
    fast = TestClient(StatusFastPath(route, services, services.statuses))
    owner, other = Account.create(), Account.create()
    job_id, did, asset = _published_job(JobStore(pool), owner.address.lower())
    message = f"{owner.address}{job_id}{did}"
    query = {"consumerAddress": owner.address, "jobId": job_id, "documentId": did}  # checksummed, as ocean.py sends

    signed = _signed(owner, message)
    answer = fast.get(PATH, params=query | signed)
    assert answer.status_code == 200 and answer.json()[0]["resultsDid"] == asset, answer.text
    assert NonceStore(pool).current(owner.address) == Decimal(signed["nonce"])  # consumed
    replay = fast.get(PATH, params=query | signed)
    assert replay.status_code == 400
    assert "not greater than the last one used" in replay.json()["errors"]["signature"]

    forged = fast.get(PATH, params=query | _signed(other, message))  # another wallet, over the owner's message
    body = forged.json()
    assert forged.status_code == 400 and (body["message"], body["success"]) == ("Validation error", False)
    assert "Invalid signature" in body["errors"]["signature"] and f"Got {other.address}" in body["errors"]["signature"]
    wrong_job = fast.get(PATH, params=query | _signed(owner, f"{owner.address}other{did}"))  # signed for another job
    assert wrong_job.status_code == 400 and "Invalid signature" in wrong_job.json()["errors"]["signature"]
    unsigned = fast.get(PATH, params={"consumerAddress": owner.address.lower(), "jobId": job_id})
    assert unsigned.status_code == 200 and "resultsDid" not in unsigned.json()[0]


def test_signed_requests_answer_as_the_route(app: FastAPI, fast: TestClient, pool: Pool) -> None:
    owner, other = Account.create(), Account.create()
    job_id, did, _ = _published_job(JobStore(pool), owner.address)
    route = TestClient(app)
    message = f"{owner.address}{job_id}{did}"
    for address in (owner.address, owner.address.lower()):
        query = {"consumerAddress": address, "jobId": job_id, "documentId": did}
        answer, expected = (
            fast.get(PATH, params=query | _signed(owner, message)),
            route.get(PATH, params=query | _signed(owner, message)),
        )
        assert (answer.status_code, answer.content) == (expected.status_code, expected.content), answer.text
        assert answer.status_code == 200 and "resultsDid" in answer.json()[0]
        for refused in (
            _signed(other, message),
            _signed(owner, message) | {"nonce": "1"},  # signed over another nonce than the one sent
            {"nonce": "abc", "signature": "0x00"},
            {"nonce": "1e999999", "signature": sign_message(owner.key.hex(), f"{message}1e999999")},  # too big to store
            {"signature": "0x00"},  # no nonce
            {"nonce": fresh_nonce(), "signature": "not hex"},
        ):
            answer, expected = fast.get(PATH, params=query | refused), route.get(PATH, params=query | refused)
            assert (answer.status_code, answer.content) == (expected.status_code, expected.content), refused
            assert answer.status_code == 400, (refused, answer.text)
    signed = _signed(owner, message)
    query = {"consumerAddress": owner.address, "jobId": job_id, "documentId": did}
    assert fast.get(PATH, params=query | signed).status_code == 200
    answer, expected = fast.get(PATH, params=query | signed), route.get(PATH, params=query | signed)  # replays
    assert (answer.status_code, answer.content) == (expected.status_code, expected.content)
    assert answer.status_code == 400


def test_unsigned_requests_see_what_ocean_node_shows(app: FastAPI, fast: TestClient, pool: Pool) -> None:
    """ocean.js 8.x asks unsigned: the answer holds no more than ocean-node's getComputeStatus (no result
    destination: ``resultsDid`` is for the owner's signed requests)."""
    owner = "0x" + secrets.token_hex(20)
    job_id, _, _ = _published_job(JobStore(pool), owner)
    route = TestClient(app)
    for client in (fast, fast, route):  # a miss, a hit, the route
        (status,) = client.get(PATH, params={"consumerAddress": owner, "jobId": job_id}).json()
        assert "resultsDid" not in status
        assert set(status) == {
            "agreementId", "jobId", "owner", "status", "statusText", "dateCreated", "dateFinished", "results",
            "stopreq", "removed", "algoDID", "inputDID", "did", "environment", "expireTimestamp",
        }  # fmt: skip


def test_checksummed_unsigned_polls_are_answered_below_fastapi(app: FastAPI, pool: Pool) -> None:
    """ocean.js polls unsigned with the EIP-55 address (ethers' getAddress): the fast path answers it itself, as the
    route would (which takes any case: web3 does not hold a mixed-case address to its checksum)."""
    asked: list[bytes] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            asked.append(scope["query_string"])
        await app(scope, receive, send)

    services: Services = app.state.services
    with TestClient(StatusFastPath(route, services, services.statuses)) as fast_only:
        end = time.monotonic() + 10
        while not services.statuses.live.is_set():
            assert time.monotonic() < end, "the status cache never connected"
            time.sleep(0.05)
        owner = Account.create()
        job_id = _job(JobStore(pool), owner.address.lower())
        for _ in range(2):  # a miss, then a hit
            answer = fast_only.get(PATH, params={"consumerAddress": owner.address})
            assert answer.status_code == 200 and [j["jobId"] for j in answer.json()] == [job_id]
            assert answer.content == TestClient(app).get(PATH, params={"consumerAddress": owner.address}).content
        assert fast_only.get(PATH, params={"consumerAddress": "0x12"}).status_code == 400  # the route words it
    assert len(asked) == 1
