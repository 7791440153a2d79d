"""Small helpers shared by tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from fastapi import FastAPI

    from c2d.settings import Settings

T = TypeVar("T")


def race(count: int, action: Callable[[], T]) -> list[T | BaseException]:
    """Run ``action`` in ``count`` threads released together; return each result or raised exception."""
    barrier = threading.Barrier(count)
    outcomes: list[T | BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        try:
            result: T | BaseException = action()
        except BaseException as exc:  # reported to the caller, which asserts on it
            result = exc
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


_last_nonce = 0


def fresh_nonce() -> str:
    """A request nonce greater than any handed out before in this test session (a microsecond clock).

    Below 2**53, so a client that reads the provider's last nonce as a float (ocean.py 3.1.2:
    ``ceil(float(nonce)) + 1``) still signs a greater one when it follows these tests for the same wallet;
    a nanosecond clock (~1.8e18) made its next nonce equal the stored one, refused."""
    global _last_nonce
    _last_nonce = max(_last_nonce + 1, time.time_ns() // 1000)
    return str(_last_nonce)


def algorithm_processes() -> list[str]:
    """Command lines of every process on the machine running a job's algorithm (sandboxed or not)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "/data/transformations/algorithm" in cmdline:
            found.append(cmdline)
    return found


def stop_node(proc: subprocess.Popen[bytes], log: Path | None = None, timeout: float = 30) -> str:
    """Ctrl-C a :func:`node_process` and return its output. If it does not stop in ``timeout`` seconds,
    fail with every thread's stack (``c2d`` prints them on SIGUSR1) and kill it, so that one stuck node
    does not hold its locks for the tests after it."""
    proc.send_signal(signal.SIGINT)
    try:
        output = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(1)
        proc.kill()
        output = proc.communicate()[0]
        text = (output or b"").decode(errors="replace") + (log.read_text(errors="replace") if log else "")
        message = f"the node did not stop within {timeout} s after Ctrl-C; its threads:\n{text[-8000:]}"
        raise AssertionError(message) from None
    return (output or b"").decode(errors="replace")


def node_process(
    settings: Settings, command: str, log: Path | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``c2d provider`` or ``c2d engine`` on ``settings``' stack as its own process; its output goes to
    ``log`` (appended), else to a pipe. ``extra_env``: more settings (``C2D_...``) for it."""
    env = {
        **os.environ,
        "C2D_DATA_DIR": str(settings.data_dir),
        "C2D_POSTGRES__PORT": str(settings.postgres.port),
        "C2D_CHAIN__PORT": str(settings.chain.port),
        "C2D_PROVIDER__PORT": str(settings.provider.port),
        "C2D_FETCH__ALLOW_HOSTS": json.dumps(settings.fetch.allow_hosts),
        **(extra_env or {}),
    }
    out = open(log, "ab") if log is not None else subprocess.PIPE  # noqa: SIM115 (the process keeps it)
    return subprocess.Popen([sys.executable, "-m", "node", command], env=env, stdout=out, stderr=subprocess.STDOUT)


def nest(root: Path, levels: int, name: bytes, leaf: bytes | None = None, body: bytes = b"") -> None:
    """``levels`` nested folders called ``name`` under ``root``, and the file ``leaf`` (holding ``body``) in the
    last one: made through descriptors, so the tree may go far beyond PATH_MAX and Python's recursion limit."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(levels):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        if leaf is not None:
            file = os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
            try:
                os.write(file, body)
            finally:
                os.close(file)
    finally:
        os.close(fd)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """``app`` on a real uvicorn server on a free loopback port, in a thread; its base URL. For what the test
    client cannot show: it collects a whole streamed body before it answers."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-api-server", daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < end, "the test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
