"""The live-log streams of both engines, alone: a growing file (local) and a followed HTTP response (argo)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3

from workflows.argo.livelog import QUEUE_CHUNKS, PodLogStream, algorithm_pod
from workflows.exceptions import EngineError
from workflows.livelogs import CHUNK_BYTES, LogStream
from workflows.local.livelog import FileFollow


def _drain(stream: LogStream, timeout: float = 10) -> bytes:
    """Every byte until the stream ends (reads that find nothing wait a little)."""
    data = b""
    end = time.monotonic() + timeout
    while (chunk := stream.read()) is not None:
        assert time.monotonic() < end, f"the stream did not end within {timeout} s; read {data!r}"
        data += chunk
        if not chunk:
            time.sleep(0.01)
    return data


def _open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            continue
    return count


# -- local: FileFollow ------------------------------------------------------------------------------------
def test_a_file_is_followed_as_it_grows_and_drained_after_the_writer_ends(tmp_path: Path) -> None:
    log = tmp_path / "algorithm.log"
    running = threading.Event()
    running.set()
    stream = FileFollow(log, running.is_set)
    assert stream.read() == b""  # not made yet: nothing, and not the end
    log.write_bytes(b"one\n")
    assert stream.read() == b"one\n"
    assert stream.read() == b""  # nothing new, still running
    with log.open("ab") as handle:
        handle.write(b"two\n")
    assert stream.read() == b"two\n"
    with log.open("ab") as handle:
        handle.write(b"x" * (CHUNK_BYTES + 10))  # written just before the step ended
    running.clear()
    assert len(stream.read() or b"") == CHUNK_BYTES  # a chunk at most per read
    assert stream.read() == b"x" * 10
    assert stream.read() is None
    assert stream.read() is None
    assert _open_fds_to(log) == 0


def test_a_followed_file_is_released_by_close(tmp_path: Path) -> None:
    log = tmp_path / "algorithm.log"
    log.write_bytes(b"line\n")
    stream = FileFollow(log, lambda: True)
    assert stream.read() == b"line\n"
    assert _open_fds_to(log) == 1
    stream.close()
    stream.close()
    assert _open_fds_to(log) == 0
    assert stream.read() is None


def test_a_symlinked_log_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("node secret")
    (tmp_path / "algorithm.log").symlink_to(tmp_path / "secret")
    stream = FileFollow(tmp_path / "algorithm.log", lambda: True)
    with pytest.raises(EngineError, match="cannot be opened") as refused:
        stream.read()
    assert str(tmp_path) not in str(refused.value)


# -- argo: PodLogStream over a real chunked HTTP response ---------------------------------------------------
class _LogServer(BaseHTTPRequestHandler):
    """``/lines?n=<count>&gap=<seconds>``: a chunked text body, one line per chunk, ``gap`` seconds apart;
    ``/silent``: one line, then nothing until the client goes."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        query = dict(part.split("=") for part in self.path.partition("?")[2].split("&") if part)
        count = int(query.get("n", "1"))
        gap = float(query.get("gap", "0"))
        try:
            for number in range(count):
                self._chunk(f"line {number}\n".encode())
                time.sleep(gap)
            if self.path.startswith("/silent"):
                self.server.silent_client.set()  # type: ignore[attr-defined]
                while self.rfile.read(1):  # until the client closes its side
                    pass
                return
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            return

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def log_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LogServer)
    server.silent_client = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _follow(url: str) -> PodLogStream:
    pool = urllib3.PoolManager()
    return PodLogStream(pool.request("GET", url, preload_content=False, timeout=urllib3.Timeout(connect=5, read=None)))


def test_a_pod_log_arrives_line_by_line_and_ends_with_the_response(log_server: str) -> None:
    stream = _follow(f"{log_server}/lines?n=5&gap=0.2")
    first = b""
    end = time.monotonic() + 5
    while not first:
        first = stream.read() or b""
        assert time.monotonic() < end
        time.sleep(0.01)
    assert first == b"line 0\n"  # before the response is complete (about a second more)
    rest = _drain(stream)
    assert first + rest == b"".join(f"line {n}\n".encode() for n in range(5))
    stream.thread.join(timeout=5)
    assert not stream.thread.is_alive()


def test_closing_a_pod_log_ends_its_reader_blocked_on_a_silent_container(log_server: str) -> None:
    stream = _follow(f"{log_server}/silent?n=1")
    assert _drain_until(stream, b"line 0\n")
    assert stream.read() == b""  # the container says nothing more: the reader thread is blocked
    assert stream.thread.is_alive()
    stream.close()
    stream.thread.join(timeout=5)
    assert not stream.thread.is_alive()
    assert stream.read() is None


def test_a_pod_log_nobody_reads_holds_a_bounded_queue_and_still_closes(log_server: str) -> None:
    stream = _follow(f"{log_server}/lines?n={QUEUE_CHUNKS * 4}")
    time.sleep(0.5)
    assert stream._queue.qsize() == QUEUE_CHUNKS  # the reader waits for the client, it does not buffer
    assert stream.thread.is_alive()
    stream.close()
    stream.thread.join(timeout=5)
    assert not stream.thread.is_alive()


def _drain_until(stream: LogStream, wanted: bytes, timeout: float = 5) -> bool:
    data = b""
    end = time.monotonic() + timeout
    while wanted not in data and time.monotonic() < end:
        data += stream.read() or b""
        time.sleep(0.01)
    return wanted in data


def test_the_algorithm_pod_is_the_running_one_of_the_latest_attempt() -> None:
    def pod(name: str, created: str, phase: str, state: str, deleting: bool = False) -> dict[str, object]:
        meta: dict[str, object] = {"name": name, "creationTimestamp": created}
        if deleting:
            meta["deletionTimestamp"] = created
        statuses = [{"name": "wait", "state": {"running": {}}}, {"name": "main", "state": {state: {}}}]
        return {"metadata": meta, "status": {"phase": phase, "containerStatuses": statuses}}

    assert algorithm_pod([]) is None
    assert algorithm_pod([pod("a", "2026-01-01T00:00:00Z", "Pending", "waiting")]) is None
    assert algorithm_pod([pod("a", "2026-01-01T00:00:00Z", "Running", "terminated")]) is None  # main ended
    assert algorithm_pod([pod("a", "2026-01-01T00:00:00Z", "Running", "running", deleting=True)]) is None
    pods = [
        pod("first", "2026-01-01T00:00:00Z", "Running", "running"),
        pod("retry", "2026-01-01T00:01:00Z", "Running", "running"),
        pod("failed", "2026-01-01T00:02:00Z", "Failed", "terminated"),
    ]
    assert algorithm_pod(pods) == "retry"


def test_the_log_server_speaks_chunked_http(log_server: str) -> None:
    """The fixture itself: a plain socket sees chunk framing (so the stream tests read real HTTP chunks)."""
    host, port = log_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"GET /lines?n=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert b"Transfer-Encoding: chunked" in answer and answer.endswith(b"7\r\nline 0\n\r\n0\r\n\r\n")
