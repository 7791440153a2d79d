"""The warm step runner: the node's own steps as Landlock-confined children of one sandboxed server."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from c2d.db.jobs import JobStore
from c2d.db.pool import Pool
from c2d.images import node_image
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from workflows.local import stepserver
from workflows.local.cgroups import StepCgroup
from workflows.local.engine import LocalEngine
from workflows.local.interpret import Step
from workflows.local.landlock import MIN_ABI, abi_version, confine
from workflows.local.runner import Watch, run_step
from workflows.local.sandbox import Bind
from workflows.local.warm import WarmProcess, WarmRunner

from .conftest import FileServer, Jobs
from .jobs import job_spec, make_environment

pytestmark = pytest.mark.skipif(
    abi_version() < MIN_ABI,
    reason=f"this kernel's Landlock ABI is {abi_version()} (< {MIN_ABI}): the engine runs every step in its own "
    "sandbox and the warm runner is not used",
)
ENV = make_environment()


def _in_child(action: object) -> int:
    """Run ``action`` in a forked child; its exit code."""
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(action())  # type: ignore[operator]
        except BaseException:  # reported through the exit code, the assertion is in the parent
            os._exit(99)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_confined_child_writes_only_its_folders_and_signals_nobody(tmp_path: Path) -> None:
    own, other = tmp_path / "job-a", tmp_path / "job-b"
    own.mkdir()
    other.mkdir()
    (other / "input").write_text("another job's data")
    victim = os.fork()
    if victim == 0:
        time.sleep(30)
        os._exit(0)

    def attempt() -> int:
        confine([Path("/usr")], [own])
        (own / "ok").write_text("mine")
        denied = 0
        for action in (
            lambda: (other / "input").read_text(),
            lambda: (other / "new").write_text("x"),
            lambda: Path("/proc/self/environ").read_bytes(),
            lambda: os.kill(victim, signal.SIGKILL),
        ):
            try:
                action()
            except OSError:
                denied += 1
        return denied

    try:
        assert _in_child(attempt) == 4
        assert (own / "ok").read_text() == "mine" and not (other / "new").exists()
        assert os.waitpid(victim, os.WNOHANG) == (0, 0)  # still alive
    finally:
        os.kill(victim, signal.SIGKILL)
        os.waitpid(victim, 0)


def _filter_step(outputs: str) -> Step:
    return Step.bare(
        "result-filter",
        "filter",
        node_image(),  # the engine's step image: the warm runner serves it
        ["python", "-m", "steps.filter", "--outputs", outputs, "--deny", "*"],
    )


def test_a_warm_step_reaches_only_its_own_job(stack: Stack, tmp_path: Path) -> None:
    """A step told to work on another job's folder (not one of its mounts) cannot touch it."""
    settings = stack.settings
    jobs = settings.jobs_dir
    own, other = jobs / "warm-own" / "data", jobs / "warm-other" / "data"
    for folder in (own, other):
        (folder / "outputs").mkdir(parents=True, exist_ok=True)
        (folder / "outputs" / "result.txt").write_text("keep me")
    scratch = jobs / "warm-own" / "tmp"  # what the runner's children may write: only under the jobs folder
    scratch.mkdir(exist_ok=True)
    runner = WarmRunner(settings.engine, Path(__file__).resolve().parents[2], (jobs, settings.store_dir), ())
    assert runner.start(tmp_path / "stepserver.log")
    try:
        binds: list[Bind] = [(own, "/data", False, None)]
        for outputs, expected_code in (("/data/outputs", 0), (str(other / "outputs"), 1)):
            log = scratch / f"filter-{expected_code}.log"
            step = _filter_step(outputs)

            def launch(step: Step = step, log: Path = log) -> WarmProcess:
                return runner.launch(step, binds, scratch, log, {}, StepCgroup())

            outcome = run_step(
                step,
                launch,
                log,
                StepCgroup(),
                Watch((), None, None),
                threading.Event(),
                time.monotonic() + 30,
            )
            assert outcome.exit_code == expected_code, log.read_text()
        assert not (own / "outputs" / "result.txt").exists()  # its own outputs: filtered
        assert (other / "outputs" / "result.txt").read_text() == "keep me"  # the other job's: untouched
        assert "Permission denied" in (scratch / "filter-1.log").read_text()
    finally:
        runner.close()
    assert "rehearsal failed" not in (tmp_path / "stepserver.log").read_text()  # it rehearsed in its sandbox


def test_steps_run_warm_and_fall_back_when_the_runner_dies(stack: Stack, pool: Pool, file_server: FileServer) -> None:
    file_server.files["/warm.csv"] = b"1\n"
    jobs = Jobs(stack.settings, JobStore(pool), None)
    with LocalEngine(stack.settings, pool, database_dsn(stack.settings)) as engine:
        jobs.engine = engine
        assert engine.warm is not None
        job = jobs.wait(jobs.submit(job_spec("print('warm')", [f"{file_server.url}/warm.csv"]), ENV))
        assert job.status == 70
        runners = {task: state["runner"] for task, state in job.details["steps"].items()}
        assert runners == {"input-fetch": "warm", "algorithm": "sandbox", "output-publish": "warm"}
        # the runner of the job's uid, started for it, runs as that uid
        [runner] = [r for r in engine.warm.all() if r.identity and r.identity.uid == job.details["sandboxUid"]]
        assert runner.alive and runner.proc is not None
        runner.proc.kill()  # the runner dies: later steps of its uid get their own sandboxes again
        end = time.monotonic() + 10
        while runner.alive and time.monotonic() < end:
            time.sleep(0.05)
        assert not runner.alive
        job = jobs.wait(jobs.submit(job_spec("print('cold')", [f"{file_server.url}/warm.csv"]), ENV))
        assert job.details["sandboxUid"] == runner.identity.uid  # the lowest free uid again
        assert job.status == 70 and {s["runner"] for s in job.details["steps"].values()} == {"sandbox"}


def test_the_runner_leaves_with_its_engine(stack: Stack, pool: Pool) -> None:
    """Closing the engine ends the runner by EOF on its socket (not by the kill after a timeout)."""
    engine = LocalEngine(stack.settings, pool, database_dsn(stack.settings)).start()
    assert engine.warm is not None and engine.protections is not None and engine.protections.pool is not None
    runner = engine.warm.runner(engine.protections.pool.acquire())
    assert runner is not None and runner.proc is not None
    proc = runner.proc
    engine.close()
    assert proc.returncode == 0, "the runner had to be killed: it never saw the engine leave"


def test_a_warm_step_runs_inside_its_cgroups(stack: Stack, tmp_path: Path) -> None:
    """The child joins its step's groups itself (through the descriptors the engine sends) before it reads
    the step: what it uses is counted there, and the step's memory limit stops it."""
    settings = stack.settings
    job = settings.jobs_dir / "warm-cgroups"
    (job / "data" / "outputs").mkdir(parents=True, exist_ok=True)
    scratch = job / "tmp"
    scratch.mkdir(exist_ok=True)
    runner = WarmRunner(settings.engine, Path(__file__).resolve().parents[2], (settings.jobs_dir,), ())
    assert runner.start(tmp_path / "stepserver.log")
    try:
        for memory, expected in ((256 * 1024**2, "Succeeded"), (1024**2, "Failed")):
            cgroup = StepCgroup.create(
                settings.engine.cgroup_root, f"test-warm-{memory}", memory=memory, pids=64, cpu=None
            )
            if "memory" not in cgroup.groups:
                cgroup.remove()
                pytest.skip("no cgroup v1 memory controller this process may write to")
            log = scratch / f"filter-{memory}.log"
            step = _filter_step("/data/outputs")
            binds: list[Bind] = [(job / "data", "/data", False, None)]
            try:
                outcome = run_step(
                    step,
                    functools.partial(runner.launch, step, binds, scratch, log, {}, cgroup),
                    log,
                    cgroup,
                    Watch((), None, None),
                    threading.Event(),
                    time.monotonic() + 30,
                )
                assert outcome.phase == expected, (outcome, log.read_text())
                assert (cgroup.peak_memory() or 0) > 0  # its pages were charged to the step's group
                if expected == "Failed":
                    assert "out of memory" in (outcome.message or ""), outcome
            finally:
                cgroup.remove()
    finally:
        runner.close()


def test_a_child_that_cannot_join_its_cgroups_says_so() -> None:
    read_only = os.open("/dev/null", os.O_RDONLY)
    assert stepserver._join([read_only], 1) == "Bad file descriptor"
    assert stepserver._join([], 3) == "3 cgroup descriptors sent, 0 received"
