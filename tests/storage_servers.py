"""Real MinIO and Kubo servers for the storage tests, built from source by ``tools/storage/build.sh``.

``make test`` builds them first (cached in ``.cache/storage/bin``); without Go the build is skipped
and these fixtures skip their tests, saying why. Servers listen on 127.0.0.1 only, on free ports.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
BIN = Path(os.environ.get("STORAGE_BIN", REPO / ".cache" / "storage" / "bin"))
BUILD_HINT = "tools/storage/build.sh builds it from the Go module proxy (make test runs it; it needs Go >= 1.26)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _binary(name: str, what: str) -> Path:
    path = BIN / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{what} is not built here ({path} missing): {BUILD_HINT}")
    return path


def _wait(check: str, proc: subprocess.Popen[bytes], log: Path, method: str = "GET") -> None:
    end = time.monotonic() + 60
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.request(method, check, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after 60 s: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True)
class MinioServer:
    endpoint: str  # http://127.0.0.1:<port>
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class KuboServer:
    api_url: str


@pytest.fixture(scope="session")
def minio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    binary = _binary("minio", "MinIO")
    folder = tmp_path_factory.mktemp("minio")
    port, console = _free_port(), _free_port()
    user, password = "c2d-test", secrets.token_hex(12)
    env = {**os.environ, "MINIO_ROOT_USER": user, "MINIO_ROOT_PASSWORD": password, "MINIO_UPDATE": "off"}
    log = folder / "server.log"
    cmd = [str(binary), "server", str(folder / "data"), "--quiet", "--address", f"127.0.0.1:{port}"]
    cmd += ["--console-address", f"127.0.0.1:{console}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(f"http://127.0.0.1:{port}/minio/health/live", proc, log)
        yield MinioServer(f"http://127.0.0.1:{port}", user, password)
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def kubo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KuboServer]:
    binary = _binary("ipfs", "Kubo (ipfs)")
    folder = tmp_path_factory.mktemp("kubo")
    env = {**os.environ, "IPFS_PATH": str(folder / "repo"), "IPFS_TELEMETRY": "off"}
    api, gateway = _free_port(), _free_port()
    # test profile: loopback addresses, no bootstrap peers, no mDNS; offline: never reaches the internet
    for args in (
        ["init", "--profile", "test", "--empty-repo"],
        ["config", "--json", "Addresses.Swarm", "[]"],
        ["config", "Addresses.API", f"/ip4/127.0.0.1/tcp/{api}"],
        ["config", "Addresses.Gateway", f"/ip4/127.0.0.1/tcp/{gateway}"],
    ):
        subprocess.run([str(binary), *args], env=env, check=True, capture_output=True, timeout=60)
    log = folder / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(binary), "daemon", "--offline"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait(f"http://127.0.0.1:{api}/api/v0/version", proc, log, method="POST")
        yield KuboServer(f"http://127.0.0.1:{api}")
    finally:
        _stop(proc)
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class CuttingProxy:
    """A TCP proxy to a server that can cut connections: ``cut_after`` bytes sent upstream on the next
    ``cuts`` connections, or refuse every connection while ``down`` is set."""

    target: tuple[str, int]
    url: str = ""
    cut_after: int = 0
    cuts: int = 0
    down: threading.Event = field(default_factory=threading.Event)
    cut_count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _pipe(self, src: socket.socket, dst: socket.socket, limit: int | None) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _serve(self, client: socket.socket) -> None:
        if self.down.is_set():
            client.close()
            return
        with self.lock:
            limit = None
            if self.cuts > 0:
                self.cuts -= 1
                self.cut_count += 1
                limit = self.cut_after
        upstream = socket.create_connection(self.target)
        threading.Thread(target=self._pipe, args=(client, upstream, limit), daemon=True).start()
        threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()


@pytest.fixture
def cutting_proxy(minio_server: MinioServer) -> Iterator[CuttingProxy]:
    host, port = minio_server.endpoint.removeprefix("http://").split(":")
    proxy = CuttingProxy((host, int(port)))
    listener = socket.create_server(("127.0.0.1", 0))
    proxy.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=proxy._serve, args=(client,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield proxy
    stop.set()
    thread.join()
    listener.close()
