"""``computeStreamableLogs`` on the local engine, end to end: a real server streams a running algorithm's output.

A real uvicorn server (the test client collects a whole body before answering, which would hide whether
lines arrive while the algorithm runs), real jobs on the local engine, requests signed ocean-node's way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from c2d.chain.signing import sign_message
from c2d.db.pool import Pool
from c2d.settings import Settings
from c2d.stack.stack import Stack
from c2d.status import STOPREQ_API
from provider.app import create_app
from provider.routers.logs import COMMAND, NOT_RUNNING
from tests.fileserver import FileServer
from tests.helpers import fresh_nonce, serving
from tests.workflows.conftest import Jobs
from tests.workflows.jobs import job_spec, make_environment
from workflows.local.engine import LocalEngine

ENV = make_environment()
URL = "/api/services/computeStreamableLogs"
SLOW_LINES = """
import sys, time
for number in range(8):
    print(f"line {number}", flush=True)
    print(f"err {number}", file=sys.stderr, flush=True)
    time.sleep(0.4)
"""


def _serve(settings: Settings, pool: Pool, engine: LocalEngine) -> AbstractContextManager[str]:
    """The provider app, the local engine's live logs wired in, on a real server."""
    return serving(create_app(settings, pool, engine, engine))


@pytest.fixture(scope="module")
def api(stack: Stack, pool: Pool, engine: LocalEngine) -> Iterator[str]:
    with _serve(stack.settings, pool, engine) as url:
        yield url


def _query(account: LocalAccount, job_id: str, address: str | None = None) -> dict[str, str]:
    """Signed by ``account`` over ``address + nonce + getComputeStreamableLogs`` (address as sent)."""
    address = address or account.address
    nonce = fresh_nonce()
    signature = sign_message(account.key.hex(), f"{address}{nonce}{COMMAND}")
    return {"jobId": job_id, "consumerAddress": address, "nonce": nonce, "signature": signature}


def _running_job(jobs: Jobs, file_server: FileServer, owner: LocalAccount, code: str = SLOW_LINES) -> str:
    file_server.files["/live.csv"] = b"1,2,3"
    job_id = jobs.submit(job_spec(code, [f"{file_server.url}/live.csv"], owner=owner.address), ENV)
    jobs.wait(job_id, status=40)  # the algorithm step's start is written before it starts
    return job_id


def _log_fds(settings: Settings, job_id: str) -> int:
    """This process's open descriptors on the job's step logs."""
    steps = str(settings.jobs_dir / job_id / "steps")
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(steps)
        except OSError:
            continue
    return count


def test_the_output_streams_while_the_algorithm_runs_and_ends_with_it(
    api: str, jobs: Jobs, file_server: FileServer, consumer: LocalAccount
) -> None:
    job_id = _running_job(jobs, file_server, consumer)
    arrivals: list[tuple[str, bool]] = []  # each line, and whether the job had finished when it arrived
    with httpx.stream("GET", api + URL, params=_query(consumer, job_id), timeout=30) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["transfer-encoding"] == "chunked"
        for line in response.iter_lines():
            job = jobs.store.get(job_id)
            assert job is not None
            arrivals.append((line, job.finished))
    lines = [line for line, _ in arrivals]
    assert [line for line in lines if line.startswith("line")] == [f"line {n}" for n in range(8)]
    assert [line for line in lines if line.startswith("err")] == [f"err {n}" for n in range(8)]  # stderr too
    assert not any(finished for _, finished in arrivals[:-2])  # lines arrive while the job still runs
    assert jobs.wait(job_id).status == 70  # the stream ended because the algorithm did
    assert _log_fds(jobs.settings, job_id) == 0


def test_a_client_that_goes_away_leaves_no_file_open(
    api: str, engine: LocalEngine, jobs: Jobs, file_server: FileServer, consumer: LocalAccount
) -> None:
    job_id = _running_job(jobs, file_server, consumer, SLOW_LINES.replace("range(8)", "range(40)"))
    with httpx.stream("GET", api + URL, params=_query(consumer, job_id), timeout=30) as response:
        assert response.status_code == 200
        lines = response.iter_lines()  # (held: dropping a started iterator closes the connection)
        assert next(lines) == "line 0"
        assert _log_fds(jobs.settings, job_id) == 1  # the stream holds the log open while it is read
    end = time.monotonic() + 5
    while _log_fds(jobs.settings, job_id):  # the client disconnected: the server closes the log
        assert time.monotonic() < end, "the log stayed open after the client went away"
        time.sleep(0.05)
    job = jobs.store.get(job_id)
    assert job is not None and not job.finished  # closed because the client went, not because the job ended
    assert jobs.store.request_stop(job_id, STOPREQ_API) and engine.stop(job_id)
    jobs.wait(job_id)


def test_a_request_streams_at_most_the_configured_bytes(
    stack: Stack, pool: Pool, engine: LocalEngine, jobs: Jobs, file_server: FileServer, consumer: LocalAccount
) -> None:
    provider = stack.settings.provider.model_copy(update={"live_log_max_bytes": 1024})
    settings = stack.settings.model_copy(update={"provider": provider})
    code = "import time\nprint('x' * 4000, flush=True)\ntime.sleep(1)"
    job_id = _running_job(jobs, file_server, consumer, code)
    with _serve(settings, pool, engine) as capped:
        response = httpx.get(capped + URL, params=_query(consumer, job_id), timeout=30)
    assert response.status_code == 200
    assert response.content == b"x" * 1024 + b"\n[log truncated: this request streams at most 1024 bytes]\n"
    jobs.wait(job_id)


def test_refusals(
    api: str, jobs: Jobs, file_server: FileServer, consumer: LocalAccount, publisher: LocalAccount
) -> None:
    job_id = _running_job(jobs, file_server, consumer)

    def get(params: dict[str, str]) -> httpx.Response:
        return httpx.get(api + URL, params=params, timeout=30)

    unknown = get(_query(consumer, "0" * 32))
    assert (unknown.status_code, unknown.text) == (404, NOT_RUNNING)
    not_hex = get(_query(consumer, "../../etc"))
    assert (not_hex.status_code, not_hex.text) == (404, NOT_RUNNING)
    other_owner = get(_query(publisher, job_id))  # well signed, by someone else than the job's owner
    assert (other_owner.status_code, other_owner.text) == (404, NOT_RUNNING)

    forged = _query(consumer, job_id) | {"signature": _query(publisher, job_id, consumer.address)["signature"]}
    bad = get(forged)
    assert (bad.status_code, bad.text) == (401, "consumer address and nonce signature mismatch")  # ocean-node's
    legacy = _query(consumer, job_id)  # signed provider v2.1's way: the message differs
    legacy["signature"] = sign_message(consumer.key.hex(), f"{consumer.address}{job_id}{legacy['nonce']}")
    assert get(legacy).status_code == 401
    signed = _query(consumer, job_id)
    assert get(signed | {"jobId": "0" * 32}).status_code == 404  # (a valid request consumes its nonce)
    replay = get(signed)
    assert (replay.status_code, replay.text) == (401, f"nonce: {signed['nonce']} is not a valid nonce")
    missing = get({k: v for k, v in _query(consumer, job_id).items() if k != "jobId"})
    assert missing.status_code == 400 and missing.text.startswith('Missing one ( "jobId" )')
    lowercase = get(_query(consumer, job_id, consumer.address.lower()))  # the address is signed as sent
    assert lowercase.status_code == 200

    assert jobs.wait(job_id).status == 70
    finished = get(_query(consumer, job_id))
    assert (finished.status_code, finished.text) == (404, NOT_RUNNING)


def test_a_job_not_yet_running_its_algorithm_has_no_live_log(
    api: str, jobs: Jobs, file_server: FileServer, consumer: LocalAccount
) -> None:
    file_server.files["/flaky-live.csv"] = b"1,2,3"
    file_server.failures["/flaky-live.csv"] = 4  # input-fetch fails three times, waits, then succeeds
    job_id = jobs.submit(job_spec(SLOW_LINES, [f"{file_server.url}/flaky-live.csv"], owner=consumer.address), ENV)
    jobs.wait(job_id, status=20)
    response = httpx.get(api + URL, params=_query(consumer, job_id), timeout=30)
    assert (response.status_code, response.text) == (404, NOT_RUNNING)
    jobs.wait(job_id, status=40)
    assert httpx.get(api + URL, params=_query(consumer, job_id), timeout=30).status_code == 200
    assert jobs.wait(job_id).status == 70


def test_the_endpoint_is_announced_for_ocean_js(api: str) -> None:
    endpoints = httpx.get(api + "/", timeout=10).json()["serviceEndpoints"]
    assert endpoints["computeStreamableLogs"] == ["GET", URL]


def test_a_node_without_live_logs_says_so(
    stack: Stack, pool: Pool, engine: LocalEngine, jobs: Jobs, file_server: FileServer, consumer: LocalAccount
) -> None:
    job_id = _running_job(jobs, file_server, consumer)
    with TestClient(create_app(stack.settings, pool, engine)) as client:  # no live logs wired in
        response = client.get(URL, params=_query(consumer, job_id))
    assert response.status_code == 503 and "does not stream logs" in response.json()["error"]
    jobs.wait(job_id)
