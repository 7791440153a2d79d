"""Metrics on ports of their own: ``c2d engine`` with ``C2D_METRICS__ENGINE_PORT``, ``c2d provider`` with
``C2D_METRICS__PROVIDER_PORT`` (then not on the API port). Real processes on the session stack; no engine runs in
this module's process (one local engine per database)."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import httpx
import pytest

from c2d.stack.stack import Stack
from tests.conftest import free_port
from tests.helpers import node_process, stop_node
from tests.scrape import Samples

pytestmark = pytest.mark.slow


def _wait_get(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> httpx.Response:
    """GET ``url`` once something serves it (``proc`` is starting)."""
    end = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the process ended ({proc.returncode}) before serving {url}"
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            assert time.monotonic() < end, f"nothing served {url} within {timeout} s"
            time.sleep(0.1)


def _wait_scrape(url: str, proc: subprocess.Popen[bytes]) -> Samples:
    response = _wait_get(url, proc)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Samples.parse(response.text)


def _closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_the_engine_serves_its_metrics_on_its_own_port(stack: Stack) -> None:
    port = free_port()
    engine = node_process(stack.settings, "engine", extra_env={"C2D_METRICS__ENGINE_PORT": str(port)})
    try:
        samples = _wait_scrape(f"http://127.0.0.1:{port}/metrics", engine)
    finally:
        output = stop_node(engine)
    assert engine.returncode == 0, output
    assert f"engine metrics on http://127.0.0.1:{port}/metrics" in output
    assert _closed(port)  # stopped with the engine
    assert samples.types["c2d_step_duration_seconds"] == "histogram"
    assert samples.types["c2d_engine_errors"] == "counter"
    assert {s["kind"] for s in samples.series("c2d_engine_errors_total")} == {
        "database",
        "job_setup",
        "unsupported_workflow",
        "internal",
    }
    assert samples.value("c2d_database_up") == 1
    for env in stack.settings.environments:
        assert samples.get("c2d_queue_depth", engine="local", environment=env.id) is not None
        assert samples.get("c2d_jobs", environment=env.id, status="70", status_text="Job finished") is not None
    assert samples.value("process_resident_memory_bytes") > 0
    assert "c2d_http_requests" not in samples.types  # the provider's, not the engine's
    assert "c2d_watcher_events" not in samples.types  # the argo watcher's


def test_the_provider_can_serve_its_metrics_off_the_api_port(stack: Stack) -> None:
    port = free_port()
    provider = node_process(stack.settings, "provider", extra_env={"C2D_METRICS__PROVIDER_PORT": str(port)})
    try:
        samples = _wait_scrape(f"http://127.0.0.1:{port}/metrics", provider)
        api = stack.settings.provider_url
        assert _wait_get(f"{api}/", provider).status_code == 200
        assert httpx.get(f"{api}/metrics", timeout=10).status_code == 404
        again = _wait_scrape(f"http://127.0.0.1:{port}/metrics", provider)
    finally:
        provider.send_signal(signal.SIGTERM)  # what Kubernetes sends (Ctrl-C ends it 130, as uvicorn does)
        output = (provider.communicate(timeout=30)[0] or b"").decode(errors="replace")
    assert provider.returncode == 0, output
    assert _closed(port)
    # the embedded local engine's metrics are the provider's
    assert {"c2d_http_requests", "c2d_jobs", "c2d_step_duration_seconds", "c2d_engine_errors"} <= set(samples.types)
    requests = "c2d_http_requests_total"
    assert again.value(requests, method="GET", route="/", status="200") >= 1
    assert again.value(requests, method="GET", route="<unmatched>", status="404") == 1
