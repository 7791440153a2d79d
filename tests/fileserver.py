"""A file server on loopback for the fetch tests: fixed bodies, 404s and injected 503s."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class FileServer:
    """Serves ``files[path] = body``; ``failures[path] = n`` answers 503 to the first n requests;
    ``redirects[path] = url`` answers 302 to ``url``."""

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    @property
    def host(self) -> str:
        """``<address>:<port>``: the allow-list entry that lets the node fetch from this server only."""
        return self.url.removeprefix("http://")


@pytest.fixture(scope="session")
def file_server() -> Iterator[FileServer]:
    with serve_files("127.0.0.1") as state:
        yield state


@contextlib.contextmanager
def serve_files(address: str) -> Iterator[FileServer]:
    """A file server listening on ``address`` (a free port), stopped on exit."""
    state = FileServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] = state.hits.get(self.path, 0) + 1
            if state.failures.get(self.path, 0) > 0:
                state.failures[self.path] -= 1
                self.send_error(503)
                return
            if self.path in state.redirects:
                self.send_response(302)
                self.send_header("Location", state.redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = state.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, 0), Handler)
    state.url = f"http://{address}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
