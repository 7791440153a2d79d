"""The argo engine's Workflow watch as the official client reads a real HTTP stream: a blank line between
events (the client hands it on as ``None``) is no event, and the watch goes on to the next one. (The
watch against a real apiserver: tests/e2e/test_argo_engine.py.)"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from workflows.argo.kube import KubeClient, KubeConfig


def _event(kind: str, name: str, version: str) -> bytes:
    workflow = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow"}
    workflow["metadata"] = {"name": name, "resourceVersion": version}  # type: ignore[assignment]
    return json.dumps({"type": kind, "object": workflow}).encode() + b"\n"


# what the server streams for a watch: an event, blank lines (one a bare CRLF), then another event
STREAM = [_event("ADDED", "wf-a", "11"), b"\n", b"\r\n", _event("MODIFIED", "wf-a", "12")]


class _Streamer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

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

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def client(tmp_path: Path) -> Iterator[KubeClient]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Streamer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(doc))
    kube = KubeClient(KubeConfig.load(tmp_path / "kubeconfig"), "jobs", timeout=5.0)
    yield kube
    kube.close()
    server.shutdown()
    server.server_close()


def test_blank_lines_in_the_stream_are_no_events(client: KubeClient) -> None:
    events = list(client.watch_workflows("c2d", "10", 5))
    assert [(e["type"], e["object"]["metadata"]["resourceVersion"]) for e in events] == [
        ("ADDED", "11"),
        ("MODIFIED", "12"),
    ]
