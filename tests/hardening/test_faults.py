"""kill -9 of the provider or of Postgres mid-job: every job ends in a true final state once things are back,
no result is lost and no algorithm runs twice for one order. (The engine alone: tests/workflows/
test_engine_restart.py; the Argo watcher: tests/e2e.)"""

from __future__ import annotations

import signal
import time

import httpx

from c2d.db.jobs import JobStore
from c2d.db.pool import Pool
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from tests.fileserver import FileServer
from tests.helpers import algorithm_processes, node_process, stop_node
from tests.workflows.conftest import Jobs
from tests.workflows.jobs import job_spec, make_environment
from workflows.local.engine import LocalEngine

from .conftest import kill_postgres, postgres_of

ENV = make_environment()
SLOW = (
    "import time\nprint('algorithm started', flush=True)\ntime.sleep(3)\nopen('/data/outputs/out.txt', 'w').write('42')"
)


def test_postgres_killed_mid_job(
    fault_stack: Stack, fault_pool: Pool, fault_jobs: Jobs, file_server: FileServer
) -> None:
    file_server.files["/pg-kill.csv"] = b"x"
    settings = fault_stack.settings
    with LocalEngine(settings, fault_pool, database_dsn(settings)) as engine:
        fault_jobs.engine = engine
        job_id = fault_jobs.submit(job_spec(SLOW, [f"{file_server.url}/pg-kill.csv"]), ENV)
        fault_jobs.wait_log(job_id, "algorithm started", timeout=60)
        kill_postgres(fault_stack)
        time.sleep(4)  # the algorithm ends while the database is away: the engine must wait, not drop it
        postgres_of(fault_stack).start()
        job = fault_jobs.wait(job_id, timeout=60)
    assert (job.status, job.status_text) == (70, "Job finished")
    assert [r["filename"] for r in job.results or []][:1] == ["out.txt"]
    assert fault_jobs.stored(job_id, "outputs/out.txt").read_text() == "42"
    log = fault_jobs.stored(job_id, "logs/algorithm.log").read_text()
    assert log.count("algorithm started") == 1  # it ran once
    statuses = [event.status for event in JobStore(fault_pool).events(job_id)]
    assert statuses == sorted(statuses) and statuses[-1] == 70


def test_provider_killed_mid_job(fault_stack: Stack, fault_jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/node-kill.csv"] = b"x"
    settings = fault_stack.settings
    log = settings.data_dir / "provider.log"
    provider = node_process(settings, "provider", log)
    try:
        running = fault_jobs.submit(job_spec(SLOW.replace("3)", "60)"), [f"{file_server.url}/node-kill.csv"]), ENV)
        fault_jobs.wait_log(running, "algorithm started", timeout=60)
        provider.send_signal(signal.SIGKILL)
        provider.wait(10)
        queued = fault_jobs.submit(job_spec(SLOW, [f"{file_server.url}/node-kill.csv"]), ENV)  # while it is down
        time.sleep(1)
        assert algorithm_processes() == []  # the sandbox died with the node
    finally:
        if provider.poll() is None:
            provider.kill()
    provider = node_process(settings, "provider", log)
    try:
        interrupted = fault_jobs.wait(running, timeout=60)
        # Not run a second time for the same order: it ends failed, its logs published.
        assert interrupted.status == 41
        assert interrupted.status_text == "Failed to run algorithm: interrupted by an engine restart"
        assert "algorithm started" in fault_jobs.stored(running, "logs/algorithm.log").read_text()
        done = fault_jobs.wait(queued, timeout=60)
        assert done.status == 70 and fault_jobs.stored(queued, "outputs/out.txt").read_text() == "42"
        answer = httpx.get(
            f"{settings.provider_url}/api/services/compute",
            params={"consumerAddress": interrupted.owner, "jobId": running},
            timeout=10,
        )
        assert answer.status_code == 200 and answer.json()[0]["status"] == 41
    finally:
        stop_node(provider, log)
