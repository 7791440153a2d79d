"""Run one job's Plan on this machine: each step in its sandbox, in DAG order, with retries.

Reports every step state change to ``on_change(states, write)`` (the engine mirrors it into Postgres;
``write=False``: a step's end, which the engine may hold back until the next write — the next step's
start follows at once, or the job's final status; a step starts only once its start is written, but
for the input-fetch that starts a job: recovery runs it again from the start anyway). Data lives
in ``<jobs dir>/<job id>/`` (mode 0700): ``volumes/<name>`` for the job's volumes and
``steps/<task>.log`` for each step's own output.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from c2d.settings import EngineSettings
from workflows.exceptions import SandboxError
from workflows.local.cgroups import StepCgroup
from workflows.local.interpret import Plan, Step, depends_met
from workflows.local.runner import Outcome, SandboxProcess, StepProcess, Watch, run_step
from workflows.local.sandbox import Bind, Runtime, bwrap_command, resolve_runtime, step_environment, steps_runtime
from workflows.local.warm import WarmRunner
from workflows.status_map import DONE_PHASES

REPO_ROOT = Path(__file__).resolve().parents[2]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _within(base: Path, sub_path: str, inside: str) -> Path:
    """``base/sub_path``, refused if it could lead out of ``base``: an absolute path, a ``..``, or a
    symlink on the way (a previous step may have left one in the volume)."""
    relative = PurePosixPath(sub_path)
    if relative.is_absolute() or ".." in relative.parts:
        raise SandboxError(f"subPath {sub_path!r} of {inside} leaves its volume")
    host = base
    for part in relative.parts:
        host = host / part
        if host.is_symlink():
            raise SandboxError(f"subPath {sub_path!r} of {inside} leaves its volume (a symlink)")
    return host


@dataclass
class JobRun:
    job_id: str
    plan: Plan
    job_dir: Path
    engine: EngineSettings
    store_dir: Path
    hidden: tuple[Path, ...]
    on_change: Callable[[dict[str, dict[str, Any]], bool], None]
    stop: threading.Event = field(default_factory=threading.Event)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)
    stopreq: int = 0
    # Set when the engine shuts down: the step is killed but its outcome is not recorded, so the next
    # engine's recovery sees it as interrupted (never as the user's stop or the algorithm's failure).
    abandoned: bool = False
    limits_missing: list[str] = field(default_factory=list)
    warm: WarmRunner | None = None  # runs the node's own step programs without a fresh sandbox each
    mounted: dict[str, list[Bind]] = field(default_factory=dict)  # task -> its mounts at its last attempt
    held_back: bool = False  # a state change is held back by the engine (see flush)

    def _set(self, task: str, *, write: bool = True, **values: Any) -> None:
        self.states.setdefault(task, {}).update({k: v for k, v in values.items() if v is not None})
        self.held_back = not write
        self.on_change(self.states, write)

    def flush(self) -> None:
        """Have the engine write the state changes it holds back."""
        if self.held_back:
            self.held_back = False
            self.on_change(self.states, True)

    def phases(self) -> dict[str, str]:
        return {task: state["phase"] for task, state in self.states.items() if "phase" in state}

    # -- mounts -----------------------------------------------------------------------------
    def _volume_dir(self, name: str) -> Path:
        return self.job_dir / "volumes" / name

    def _binds(self, step: Step) -> list[Bind]:
        binds: list[Bind] = []
        for mount in step.mounts:
            volume = self.plan.volumes[mount.volume]
            if volume.kind == "scratch":
                binds.append((None, mount.path, False, volume.size))
                continue
            if volume.kind == "host":
                base = Path(volume.host_path or "")
                if not base.resolve().is_relative_to(self.store_dir.resolve()):
                    raise SandboxError(f"hostPath {base} is outside the results store {self.store_dir}")
            else:
                base = self._volume_dir(volume.name)
            host = _within(base, mount.sub_path, mount.path) if mount.sub_path else base
            host.mkdir(parents=True, exist_ok=True)
            binds.append((host, mount.path, mount.read_only, None))
        self.mounted[step.task] = binds
        return binds

    def host_path(self, step: Step, inside: str) -> Path | None:
        """Where a path inside the step's sandbox is on the host (for output parameters)."""
        binds = self.mounted.get(step.task) or self._binds(step)
        matching = [
            (host, path)
            for host, path, _, _ in binds
            if host is not None and (inside == path or inside.startswith(path.rstrip("/") + "/"))
        ]
        if not matching:
            return None
        host, path = max(matching, key=lambda match: len(match[1]))
        return host / inside[len(path) :].lstrip("/")

    # -- one step ---------------------------------------------------------------------------
    def _runtime(self, step: Step) -> Runtime:
        if step.image == self.engine.step_image:
            return steps_runtime(REPO_ROOT)
        return resolve_runtime(step.image, self.engine.runtimes)

    def _attempt(self, step: Step, attempt: int, deadline: float | None) -> Outcome:
        try:
            runtime = self._runtime(step)
            binds = self._binds(step)
        except SandboxError as exc:
            return Outcome("Error", None, str(exc))
        cgroup = StepCgroup.create(
            self.engine.cgroup_root,
            f"{self.job_id}-{step.task}-{attempt}",
            memory=step.memory,
            pids=step.pids,
            cpu=step.cpu,
        )
        self.limits_missing = sorted(set(self.limits_missing) | set(cgroup.missing))
        rlimits = {"core": 0, "nofile": 4096}
        if step.disk:
            rlimits["fsize"] = step.disk
        if step.memory and "memory" in cgroup.missing:
            rlimits["as"] = step.memory
        log_file = self.job_dir / "steps" / f"{step.task}.log"
        try:
            if self.warm is not None and self.warm.supports(step):
                tmp = self.job_dir / "tmp" / f"{step.task}-{attempt}"  # the step's /tmp, on the job's disk
                tmp.mkdir(parents=True, exist_ok=True)
                binds = [(host or tmp, inside, ro, size) for host, inside, ro, size in binds]
                start: Callable[[], StepProcess] = functools.partial(
                    self.warm.launch, step, binds, tmp, log_file, rlimits, cgroup
                )
            else:
                argv = [*cgroup.prefix(rlimits), *bwrap_command(self.engine.bwrap, step, runtime, binds, self.hidden)]
                env = step_environment(step, runtime)
                start = functools.partial(SandboxProcess, argv, env, log_file)
        except SandboxError as exc:
            cgroup.remove()
            return Outcome("Error", None, str(exc))
        writable = tuple(host for host, _, ro, _ in binds if host is not None and not ro)
        watch = Watch(writable, step.disk, step.max_files) if (step.disk or step.max_files) else Watch((), None, None)
        step_deadline = time.monotonic() + step.deadline if step.deadline else None
        ends = [d for d in (deadline, step_deadline) if d is not None]
        # Publishing is not interrupted by a stop request: the user's logs and outputs are on their way.
        stop = threading.Event() if step.stage == "publish" else self.stop
        try:
            return run_step(step, start, log_file, cgroup, watch, stop, min(ends) if ends else None, self.flush)
        finally:
            cgroup.remove()

    def _run_step(self, step: Step, deadline: float | None) -> Outcome:
        attempt = 0
        while True:
            runner = "warm" if self.warm is not None and self.warm.supports(step) else "sandbox"
            # Input-fetch steps that start a job are run again from the start by recovery anyway: their
            # start is written with their end, or once they have run POLL seconds (see run_step).
            first = step.stage == "configure" and all(self.plan.step(t).stage == "configure" for t in self.states)
            self._set(step.task, phase="Running", startedAt=_now(), attempt=attempt, runner=runner, write=not first)
            outcome = self._attempt(step, attempt, deadline)
            retry = step.retry
            if outcome.phase == "Succeeded" or retry is None or attempt >= retry.limit or outcome.reason:
                return outcome
            if retry.exit_code is not None and outcome.exit_code != retry.exit_code:
                return outcome
            time.sleep(min(60.0, retry.backoff_seconds * retry.factor**attempt))
            attempt += 1

    # -- the job ----------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]] | None:
        """Run every step; returns the result list of the publish step (None if it has none)."""
        self.job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.job_dir, 0o700)
        deadline = time.monotonic() + self.plan.deadline if self.plan.deadline else None
        for step in self.plan.steps:
            if self.abandoned:
                self.flush()
                return None
            if self.states.get(step.task, {}).get("phase") in DONE_PHASES:
                continue  # resumed job: this step already ran
            if deadline is not None and time.monotonic() >= deadline:
                self._set(step.task, phase="Omitted", message="workflow deadline exceeded", write=False)
                continue
            if not depends_met(step.depends, self.phases()):
                self._set(step.task, phase="Omitted", write=False)
                continue
            outcome = self._run_step(step, deadline)
            if self.abandoned:
                return None
            if outcome.reason == "deadline" and step.stage == "algorithm":
                self.stopreq = 2
            # The result list is part of the step's recorded state: a job resumed after publishing
            # (its folder already gone) still finishes with its results.
            results = self._read_results(step) if outcome.phase == "Succeeded" and "results" in step.outputs else None
            self._set(
                step.task,
                phase=outcome.phase,
                exitCode=outcome.exit_code,
                message=outcome.message,
                reason=outcome.reason,
                finishedAt=_now(),
                results=results,
                write=False,  # written with the next step's start, or below
            )
        return self.results()  # the last step's end is written with the job's final status

    def results(self) -> list[dict[str, Any]] | None:
        """The result list recorded by the step that declares a ``results`` output (None if none ran)."""
        for step in self.plan.steps:
            recorded = self.states.get(step.task, {}).get("results")
            if "results" in step.outputs and isinstance(recorded, list):
                return recorded
        return None

    def _read_results(self, step: Step) -> list[dict[str, Any]] | None:
        path = self.host_path(step, step.outputs["results"])
        if path is None or not path.is_file():
            return None
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, list) else None

    def cleanup(self) -> None:
        shutil.rmtree(self.job_dir, ignore_errors=True)
