"""kill -9 of the engine process mid-job: the next engine recovers every job it finds half-run."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from c2d.db.jobs import JobStore
from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from tests.helpers import algorithm_processes, nest, node_process, stop_node

from .conftest import FileServer, Jobs
from .jobs import job_spec, make_environment

ENV = make_environment()


@pytest.fixture
def offline_jobs(stack: Stack, pool: Pool) -> Iterator[Jobs]:
    """Jobs submitted while no engine runs in this process (the engines are child processes)."""
    yield Jobs(stack.settings, JobStore(pool), None)


def test_killed_engine_leaves_no_job_running(offline_jobs: Jobs, stack: Stack, file_server: FileServer) -> None:
    jobs = offline_jobs
    file_server.files["/restart.csv"] = b"x"
    code = "import time\nprint('long algorithm started', flush=True)\ntime.sleep(300)"
    running = jobs.submit(job_spec(code, [f"{file_server.url}/restart.csv"]), ENV)
    first = node_process(stack.settings, "engine")
    try:
        jobs.wait_log(running, "long algorithm started", timeout=60)
        # Queued while the engine is dead: must run after the restart.
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        queued = jobs.submit(job_spec("print('after restart')", [f"{file_server.url}/restart.csv"]), ENV)
        time.sleep(1)
        assert jobs.store.get(running).status == 40  # type: ignore[union-attr]
        # The sandbox died with its engine (die-with-parent): no algorithm process is left.
        assert algorithm_processes() == []
    finally:
        if first.poll() is None:
            first.kill()
    second = node_process(stack.settings, "engine")
    try:
        job = jobs.wait(running, timeout=60)
        assert job.status == 41
        assert job.status_text == "Failed to run algorithm: interrupted by an engine restart"
        # The logs of the interrupted run were still published.
        assert "long algorithm started" in jobs.stored(running, "logs/algorithm.log").read_text()
        assert jobs.wait(queued, timeout=60).status == 70
    finally:
        output = stop_node(second)
    assert second.returncode == 0, output
    assert "local engine stopped" in output


def test_only_one_engine_per_database(stack: Stack) -> None:
    first = node_process(stack.settings, "engine")
    try:
        time.sleep(0.5)
        assert first.stdout is not None
        first.stdout.readline()  # the first engine is up
        second = node_process(stack.settings, "engine")
        out = second.communicate(timeout=30)[0].decode()
        assert second.returncode == 1
        assert "another local engine is already running on this database" in out
    finally:
        stop_node(first)


def test_graceful_shutdown_leaves_jobs_for_recovery(
    offline_jobs: Jobs, stack: Stack, pool: Pool, file_server: FileServer
) -> None:
    """Closing the engine (provider shutdown) kills the step but does not pass it off as a user stop."""
    from c2d.stack.postgres import database_dsn
    from workflows.local.engine import LocalEngine

    jobs = offline_jobs
    file_server.files["/shutdown.csv"] = b"x"
    code = "import time\nprint('working', flush=True)\ntime.sleep(300)"
    job_id = jobs.submit(job_spec(code, [f"{file_server.url}/shutdown.csv"]), ENV)
    dsn = database_dsn(stack.settings)
    with LocalEngine(stack.settings, pool, dsn):
        jobs.wait_log(job_id, "working", timeout=60)
    job = jobs.store.get(job_id)
    assert job is not None and not job.finished and job.stopreq == 0
    assert job.details["steps"]["algorithm"]["phase"] == "Running"
    with LocalEngine(stack.settings, pool, dsn):
        job = jobs.wait(job_id, timeout=60)
    assert (job.status, job.stopreq) == (41, 0)
    assert job.status_text == "Failed to run algorithm: interrupted by an engine restart"


def test_job_recorded_as_published_finishes_with_its_results(
    offline_jobs: Jobs, stack: Stack, pool: Pool, file_server: FileServer
) -> None:
    """An engine that died after publishing (folder removed) but before the final status: nothing is lost."""
    from c2d.stack.postgres import database_dsn
    from workflows.local.engine import LocalEngine

    jobs = offline_jobs
    job_id = jobs.submit(job_spec("print('x')", [f"{file_server.url}/published.csv"]), ENV)
    results = [{"filename": "out.txt", "filesize": 3, "type": "output", "path": "outputs/out.txt"}]
    steps = {
        "input-fetch": {"phase": "Succeeded", "exitCode": 0},
        "algorithm": {"phase": "Succeeded", "exitCode": 0},
        "output-publish": {"phase": "Succeeded", "exitCode": 0, "results": results},
    }
    jobs.store.transition(job_id, 60, source="test")
    jobs.store.update_details(job_id, {"steps": steps})
    assert not (stack.settings.jobs_dir / job_id).exists()
    with LocalEngine(stack.settings, pool, database_dsn(stack.settings)):
        job = jobs.wait(job_id, timeout=30)
    assert (job.status, job.results) == (70, results)
    assert file_server.hits.get("/published.csv") is None  # nothing ran again


def test_engine_start_removes_the_folders_of_jobs_that_are_not_running(
    offline_jobs: Jobs, stack: Stack, pool: Pool, file_server: FileServer
) -> None:
    """An engine that died between a job's final status and the removal of its folder: the consumer's
    data left there is removed by the next start; a half-run job's folder is kept for its recovery."""
    from c2d.stack.postgres import database_dsn
    from workflows.local.engine import LocalEngine

    jobs = offline_jobs
    finished = jobs.submit(job_spec("print('x')", [f"{file_server.url}/left.csv"]), ENV)
    jobs.store.transition(finished, 70, source="test", finished=True, results=[])
    running = jobs.submit(job_spec("print('x')", [f"{file_server.url}/kept.csv"]), ENV)
    jobs.store.transition(running, 20, source="test")  # its input-fetch was running: run again from the start
    for job_id in (finished, running):
        data = stack.settings.jobs_dir / job_id / "volumes" / "data" / "inputs"
        data.mkdir(parents=True)
        (data / "0").write_text("private")
    with LocalEngine(stack.settings, pool, database_dsn(stack.settings)):
        assert not (stack.settings.jobs_dir / finished).exists()
        file_server.files["/kept.csv"] = b"x"
        assert jobs.wait(running, timeout=30).status == 70
    assert file_server.hits.get("/left.csv") is None


def test_engine_start_removes_any_job_folder_whatever_is_inside(stack: Stack, pool: Pool) -> None:
    """What a killed engine can leave: a tree far deeper than Python's recursion limit (and than PATH_MAX), a
    folder the algorithm made unreadable, a job disk still mounted. The next engine starts all the same, and
    removes them."""
    from c2d.stack.postgres import database_dsn
    from workflows.local.engine import LocalEngine
    from workflows.local.jobdisk import JobDisk

    jobs_dir = stack.settings.jobs_dir
    deep, locked, mounted = (jobs_dir / (letter * 32) for letter in "abc")  # ids no job has
    deep.mkdir(parents=True)
    nest(deep, 20_000, b"d" * 200)
    (locked / "outputs").mkdir(parents=True)
    (locked / "outputs" / "secret").write_text("x")
    os.chmod(locked / "outputs", 0)
    mounted.mkdir()
    JobDisk(mounted).create(4 * 1024**2, 64, None)
    assert JobDisk(mounted).mounted
    with LocalEngine(stack.settings, pool, database_dsn(stack.settings)):
        assert not deep.exists() and not locked.exists() and not mounted.exists()
