"""Operator metrics on the provider: ``GET /metrics`` after a real job run by the embedded local engine, the job
counts and queue depth read from Postgres, their cache, and the switches that hide the endpoint."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import ConnectionPool

from c2d.db.engine_queue import SUBMITTED, EngineQueue
from c2d.db.jobs import JobStore
from c2d.db.pool import Pool
from c2d.metrics import JobCountsCollector
from c2d.settings import MetricsSettings, Settings
from c2d.stack.stack import Stack
from c2d.status import JobStatus
from provider.app import create_app, serve_app
from tests.conftest import free_port
from tests.fileserver import FileServer
from tests.scrape import Samples
from tests.workflows.conftest import Jobs
from tests.workflows.jobs import job_spec, make_environment, new_job, render
from workflows.argo.observe import templates
from workflows.local.engine import LocalEngine

ENV = make_environment()


def _settings(stack: Stack, **metrics: object) -> Settings:
    """The stack's settings with job counts read at every scrape (no cache between a test's two scrapes)."""
    return stack.settings.model_copy(update={"metrics": MetricsSettings.model_validate({"cache_seconds": 0} | metrics)})


@pytest.fixture
def served(stack: Stack, pool: Pool, engine: LocalEngine) -> Iterator[TestClient]:
    """The app as the server runs it (serve_app: request metrics around the status fast path), fresh metrics."""
    with TestClient(serve_app(create_app(_settings(stack), pool, engine))) as client:
        yield client


def _scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    return Samples.parse(response.text)


def test_metrics_after_a_real_job(
    served: TestClient, jobs: Jobs, file_server: FileServer, consumer: LocalAccount
) -> None:
    before = _scrape(served)
    file_server.files["/metrics.csv"] = b"1,2,3"
    code = "open('/data/outputs/answer.txt', 'w').write('42')"
    job_id = jobs.submit(job_spec(code, [f"{file_server.url}/metrics.csv"], owner=consumer.address), ENV)
    job = jobs.wait(job_id)
    assert job.status == JobStatus.JOB_FINISHED, job.status_text
    # the status endpoint twice: answered by the fast path (one-case address), then by the FastAPI route
    for owner in (consumer.address.lower(), consumer.address):
        (status,) = served.get("/api/services/compute", params={"consumerAddress": owner, "jobId": job_id}).json()
        assert status["status"] == 70
    assert served.get("/api/aquarius/assets/ddo/did:op:" + "00" * 32).status_code == 404
    assert served.get("/no/such/path").status_code == 404
    assert served.request("BREW", "/").status_code == 405
    after = _scrape(served)

    # the job, under its final status and environment
    final = {"environment": "test", "status": "70", "status_text": "Job finished"}
    assert after.value("c2d_jobs", **final) == before.value("c2d_jobs", **final) + 1
    assert after.types["c2d_jobs"] == "gauge" and after.value("c2d_database_up") == 1
    # every configured environment has a series for every status, zero included
    for env in jobs.settings.environments:
        assert {(s["environment"], s["status"]) for s in after.series("c2d_jobs")} >= {
            (env.id, str(int(code))) for code in JobStatus
        }
        assert after.get("c2d_queue_depth", engine="local", environment=env.id) == 0

    # a duration for each step that ran, under its template's name
    steps = job.details["steps"]
    names = templates(job.workflow or {})
    assert set(names) == set(steps) and len(steps) >= 3
    for task, state in steps.items():
        labels = {"engine": "local", "step": names[task], "outcome": state["phase"]}
        count = after.value("c2d_step_duration_seconds_count", **labels)
        assert count == before.value("c2d_step_duration_seconds_count", **labels) + 1, (task, labels)
        assert after.value("c2d_step_duration_seconds_sum", **labels) > before.value(
            "c2d_step_duration_seconds_sum", **labels
        )
    assert after.get("c2d_engine_errors_total", engine="local", kind="internal") == 0

    # requests by route template, never by raw path; the fast path's too
    requests = "c2d_http_requests_total"
    assert after.value(requests, method="GET", route="/api/services/compute", status="200") == 2
    assert after.value(requests, method="GET", route="/api/aquarius/assets/ddo/{did}", status="404") == 1
    assert after.value(requests, method="GET", route="<unmatched>", status="404") == 1
    assert after.value(requests, method="OTHER", route="/", status="405") == 1
    assert after.value(requests, method="GET", route="/metrics", status="200") == 1  # the scrape before
    routes = {series["route"] for series in after.series(requests)}
    assert not any(job_id in route or "did:op" in route for route in routes)
    latency = {"method": "GET", "route": "/api/services/compute"}
    assert after.value("c2d_http_request_duration_seconds_count", **latency) == 2
    assert after.value("c2d_http_request_duration_seconds_bucket", **latency, le="+Inf") == 2
    assert after.value("process_resident_memory_bytes") > 0


def test_queue_depth_counts_jobs_waiting_for_their_engine(served: TestClient, pool: Pool, stack: Stack) -> None:
    """An Argo job waits while queued (1) and while claimed but not yet accepted by the cluster (10)."""
    env = make_environment(id="metrics-queue")
    spec = job_spec("print(1)", ["http://127.0.0.1:1/x"])
    store = JobStore(pool)
    store.create(new_job(spec, env, render(spec, env, stack.settings.store_dir), "argo"))
    waiting = {"engine": "argo", "environment": env.id}
    try:
        assert _scrape(served).value("c2d_queue_depth", **waiting) == 1
        store.transition(spec.job_id, JobStatus.JOB_STARTED, source="test")
        assert _scrape(served).value("c2d_queue_depth", **waiting) == 1
        EngineQueue(pool, "argo").mark(spec.job_id, SUBMITTED)
        assert _scrape(served).value("c2d_queue_depth", **waiting) == 0
    finally:
        store.transition(spec.job_id, JobStatus.DATA_PROVISIONING_FAILED, source="test", finished=True, results=[])
    counts = _scrape(served)
    assert counts.value("c2d_jobs", environment=env.id, status="31", status_text="Data provisioning failed") == 1


def test_job_counts_are_read_once_per_cache_period(pool: Pool, stack: Stack) -> None:
    now = [1000.0]
    collector = JobCountsCollector(pool, [], ["argo"], cache_seconds=5, clock=lambda: now[0])
    env = make_environment(id="metrics-cache")
    waiting = {"engine": "argo", "environment": env.id}

    def queued() -> float:
        for family in collector.collect():
            for sample in family.samples:
                if sample.name == "c2d_queue_depth" and sample.labels == waiting:
                    return sample.value
        return 0.0

    assert queued() == 0
    spec = job_spec("print(1)", ["http://127.0.0.1:1/x"])
    store = JobStore(pool)
    store.create(new_job(spec, env, render(spec, env, stack.settings.store_dir), "argo"))
    try:
        now[0] += 4.9
        assert queued() == 0  # the counts of 4.9 s ago
        now[0] += 0.1
        assert queued() == 1
    finally:
        store.transition(spec.job_id, JobStatus.DATA_PROVISIONING_FAILED, source="test", finished=True, results=[])


def test_a_database_outage_is_a_metric_not_a_failed_scrape() -> None:
    """Postgres unreachable: the scrape still answers, with c2d_database_up 0 and no job counts."""
    dsn = f"host=127.0.0.1 port={free_port()} dbname=c2d user=c2d connect_timeout=1"
    away: Pool = ConnectionPool(dsn, min_size=0, max_size=1, open=True, timeout=0.5, kwargs={"autocommit": True})
    try:
        collector = JobCountsCollector(away, ["env"], ["local"], cache_seconds=5)
        began = time.monotonic()
        families = {family.name: family for family in collector.collect()}
        assert list(families) == ["c2d_database_up"] and families["c2d_database_up"].samples[0].value == 0
        again = {family.name for family in collector.collect()}  # the failure is reused, not retried at once
        assert again == {"c2d_database_up"} and time.monotonic() - began < 5
    finally:
        away.close()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn)


def test_metrics_can_be_disabled_or_moved_off_the_api_port(stack: Stack, pool: Pool) -> None:
    app = create_app(_settings(stack, enabled=False), pool)
    assert app.state.metrics is None
    with TestClient(serve_app(app)) as client:
        assert client.get("/metrics").status_code == 404
    moved = create_app(_settings(stack, provider_port=free_port()), pool)
    assert moved.state.metrics is not None  # served by the node on its own port (test_metrics_ports)
    with TestClient(serve_app(moved)) as client:
        assert client.get("/metrics").status_code == 404
        assert "/metrics" not in client.get("/spec").text
