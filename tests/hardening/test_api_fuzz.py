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
from typing import Any

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


# DDOs (and their metadata) are open documents: these say "an object" on purpose.
OPEN_DOCUMENTS = {
    ("GET /api/aquarius/assets/ddo/{did}", "200 answer"),
    ("GET /api/aquarius/assets/metadata/{did}", "200 answer"),
    ("POST /api/aquarius/assets/ddo/validate", "request body"),
}


def _says_nothing(schema: dict[str, Any]) -> bool:
    """{} or "any object", also as the items of an array or the values of a map."""
    if schema.get("type") == "array":
        return _says_nothing(schema.get("items", {}))
    if schema.get("type") == "object" and "properties" not in schema:
        values = schema.get("additionalProperties", True)
        return values is True or _says_nothing(values)
    return not schema


def test_the_schema_says_what_each_operation_takes_and_answers(served: str) -> None:
    """Every JSON body, request or response (errors included), has a schema that says more than "an
    object", so that the check above fails when a response drifts; and no 422, which is never answered
    (a request that fails validation gets 400, Ocean's shape)."""
    spec = httpx.get(f"{served}/spec").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert "422" not in operation["responses"], where
            bodies = [(f"{status} answer", response) for status, response in operation["responses"].items()]
            bodies += [("request body", operation["requestBody"])] if "requestBody" in operation else []
            for name, body in bodies:
                schema = body.get("content", {}).get("application/json", {}).get("schema")
                if schema is not None and (where, name) not in OPEN_DOCUMENTS:
                    assert not _says_nothing(schema), f"{where}: the {name} is undocumented: {schema}"
