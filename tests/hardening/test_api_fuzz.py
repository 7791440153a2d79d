"""schemathesis over the provider's OpenAPI (its CLI, against the served app): no 5xx, every status code
documented, every response matching its schema, malformed input refused.

Two checks are left out, with reasons: ``positive_data_acceptance`` (Ocean's parameters are declared
optional so that a missing one gets Ocean's own error body, so schema-valid requests without them
are refused on purpose) and ``allow_header_conformance`` (Starlette lists in ``Allow`` only the
methods of the first route of a path that several routers share)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from provider.app import create_app, serve_app
from tests.conftest import free_port


@pytest.fixture(scope="module")
def served(stack: Stack, pool: Pool) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            serve_app(create_app(stack.settings, pool, None)), host="127.0.0.1", port=port, log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < end, "the API did not start"
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(10)


def test_the_api_holds_up_against_its_own_schema(served: str, tmp_path: Path) -> None:
    assert httpx.get(f"{served}/spec").status_code == 200
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{served}/spec",
        "--checks",
        "all",
        "--exclude-checks",
        "positive_data_acceptance,allow_header_conformance",
        "--max-examples",
        "30",
        "--generation-deterministic",
        "--no-color",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "passed" in done.stdout
