"""A :class:`KubeClient` (the official client underneath) against a loopback HTTP server that answers as the test's
handler says: for what a real apiserver cannot be made to do on demand (a stream's blank lines, refusals)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from workflows.argo.kube import KubeClient, KubeConfig


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: 40 ms each request otherwise

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def loopback_client(handler: type[BaseHTTPRequestHandler], folder: Path) -> Iterator[KubeClient]:
    """A client (namespace ``jobs``) whose every request ``handler`` answers; its kubeconfig is put in ``folder``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (folder / "kubeconfig").write_text(yaml.safe_dump(doc))
    kube = KubeClient(KubeConfig.load(folder / "kubeconfig"), "jobs", timeout=5.0)
    try:
        yield kube
    finally:
        kube.close()
        server.shutdown()
        server.server_close()
