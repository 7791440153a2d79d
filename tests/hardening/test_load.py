"""200 clients polling job statuses through the real provider while 50 jobs run: no error, every job final.
(Latency and rates are measured by bench/status_api.py, not asserted here.)"""

from __future__ import annotations

import socket
import threading
import time

import httpx

from c2d.stack.stack import Stack
from tests.fileserver import FileServer
from tests.helpers import node_process, stop_node
from tests.workflows.conftest import Jobs
from tests.workflows.jobs import OWNER, job_spec, make_environment

CLIENTS = 200
JOBS = 50


def _response_status(conn: socket.socket) -> int:
    """Read one HTTP/1.1 response (with a Content-Length body) off a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, "the server closed the connection"
        body += chunk
    return int(head.split(b" ")[1])


def test_polling_clients_while_jobs_run(fault_stack: Stack, fault_jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/load.csv"] = b"1\n"
    settings = fault_stack.settings
    log = settings.data_dir / "provider-load.log"
    provider = node_process(settings, "provider", log)
    url = f"{settings.provider_url}/api/services/compute"
    try:
        end = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url, params={"consumerAddress": OWNER}, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end and provider.poll() is None, "the provider did not start"
            time.sleep(0.2)
        env = make_environment()
        job_ids = [
            fault_jobs.submit(job_spec("open('/data/outputs/o', 'w').write('1')", [f"{file_server.url}/load.csv"]), env)
            for _ in range(JOBS)
        ]
        errors: list[str] = []
        latencies: list[float] = []
        lock = threading.Lock()
        done = threading.Event()

        def client(index: int) -> None:
            params = {"consumerAddress": OWNER, "jobId": job_ids[index % JOBS]}
            with httpx.Client(timeout=10) as http:
                while not done.is_set():
                    start = time.monotonic()
                    try:
                        answer = http.get(url, params=params)
                        problem = None if answer.status_code == 200 and len(answer.json()) == 1 else answer.text
                    except httpx.HTTPError as exc:
                        problem = repr(exc)
                    with lock:
                        latencies.append(time.monotonic() - start)
                        if problem:
                            errors.append(problem)
                    time.sleep(0.1)

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            finished = [fault_jobs.wait(job_id, timeout=180) for job_id in job_ids]
        finally:
            done.set()
            for thread in threads:
                thread.join(30)
        assert errors == [], errors[:5]
        assert [job.status for job in finished] == [70] * JOBS
        assert len(latencies) > CLIENTS  # every client polled
        # A client that polls less often than uvicorn's default keep-alive (5 s) keeps its connection: a
        # poll sent just as the server closes an idle connection would fail (a starved client thread above
        # waited up to 4 s between two polls).
        with socket.create_connection(("127.0.0.1", settings.provider.port), timeout=10) as conn:
            request = f"GET /api/services/compute?consumerAddress={OWNER} HTTP/1.1\r\nHost: c2d\r\n\r\n".encode()
            conn.sendall(request)
            assert _response_status(conn) == 200
            time.sleep(6)
            conn.sendall(request)
            assert _response_status(conn) == 200
    finally:
        stop_node(provider, log)
