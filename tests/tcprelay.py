"""A TCP relay for the tests: lets pods on the real node reach a server of the test session that listens on
127.0.0.1 only (Postgres, anvil), through the node's address."""

from __future__ import annotations

import contextlib
import selectors
import socket
import socketserver
import threading
from collections.abc import Iterator


def _pipe(one: socket.socket, other: socket.socket) -> None:
    with selectors.DefaultSelector() as selector:
        selector.register(one, selectors.EVENT_READ, other)
        selector.register(other, selectors.EVENT_READ, one)
        while True:
            for key, _ in selector.select():
                data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                if not data:
                    return
                key.data.sendall(data)


@contextlib.contextmanager
def tcp_relay(address: str, target: tuple[str, int]) -> Iterator[int]:
    """Relays connections to ``address``:<the port yielded> to ``target`` until the block ends."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            with socket.create_connection(target, timeout=10) as upstream:
                upstream.settimeout(None)
                _pipe(self.request, upstream)

    server = socketserver.ThreadingTCPServer((address, 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
