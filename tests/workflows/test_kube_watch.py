"""The argo engine's Workflow watch as the official client reads a real HTTP stream: a blank line between
events (the client hands it on as ``None``) is no event, and the watch goes on to the next one. (The
watch against a real apiserver: tests/e2e/test_argo_engine.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflows.argo.kube import KubeClient

from .kube_loopback import QuietHandler, loopback_client


def _event(kind: str, name: str, version: str) -> bytes:
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow"}
    workflow["metadata"] = {"name": name, "resourceVersion": version}  # type: ignore[assignment]
    return json.dumps({"type": kind, "object": workflow}).encode() + b"\n"


# what the server streams for a watch: an event, blank lines (one a bare CRLF), then another event
STREAM = [_event("ADDED", "wf-a", "11"), b"\n", b"\r\n", _event("MODIFIED", "wf-a", "12")]


class _Streamer(QuietHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in STREAM:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True


@pytest.fixture
def client(tmp_path: Path) -> Iterator[KubeClient]:
    with loopback_client(_Streamer, tmp_path) as kube:
        yield kube


def test_blank_lines_in_the_stream_are_no_events(client: KubeClient) -> None:
    events = list(client.watch_workflows("c2d", "10", 5))
    assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("ADDED", "11"),
        ("MODIFIED", "12"),
    ]
