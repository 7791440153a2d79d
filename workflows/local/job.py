"""Run one job's Plan on this machine: each step in its sandbox, in DAG order, with retries.

Reports every step state change to ``on_change(states, write)`` (the engine mirrors it into Postgres;
``write=False``: a step's end, which the engine may hold back until the next write — the next step's
start follows at once, or the job's final status; a step starts only once its start is written, but
for the input-fetch that starts a job: recovery runs it again from the start anyway).

Data lives in ``<jobs dir>/<job id>/`` (mode 0711, the engine's): ``disk`` is the job's own file system
(:mod:`workflows.local.jobdisk`), owned by the job's host uid, with a folder per job volume and one per
step's scratch volume (``.scratch/<task>-<attempt>-<volume>``); ``steps/<task>.log`` holds each step's own
output and ``steps/<task>.setup`` what its launch said (mode 0700, the engine's). Where this host cannot
make job file systems, the volumes are plain folders in ``volumes/`` and scratch volumes are tmpfs.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, cast

from c2d.db.job_records import ResultEntry, StepDetail
from c2d.exceptions import UnsupportedImageError
from c2d.fstree import DEFAULT_MAX_DEPTH, TreeError, remove_tree, walk
from c2d.settings import EngineSettings
from workflows.exceptions import GpuUnavailableError, JobSetupError, SandboxError
from workflows.local import gpu, jobdisk, seccomp
from workflows.local.cgroups import StepCgroup
from workflows.local.identity import Identity
from workflows.local.interpret import Plan, Step, depends_met
from workflows.local.jobdisk import INODE_ROOM, JobDisk
from workflows.local.livelog import FileFollow
from workflows.local.protections import Protections
from workflows.local.runner import Outcome, SandboxProcess, StepProcess, Watch, clean_text, run_step, setup_channel
from workflows.local.sandbox import (
    Bind,
    Launch,
    Runtime,
    bwrap_command,
    resolve_runtime,
    step_environment,
    steps_runtime,
)
from workflows.local.warm import WarmRunner
from workflows.status_map import DONE_PHASES

log = logging.getLogger(__name__)
REPO_ROOT = Path(__file__).resolve().parents[2]
NO_PROTECTIONS = Protections(None, None, None, False, ())


def discard_job_folder(job_dir: Path) -> bool:
    """Unmount whatever is mounted in a job's folder, delete its disk image and the folder, whatever the tree
    inside looks like (any depth, any number of files). Errors are logged, never raised: a job's folder never
    stops the engine (the next start tries again). True once the folder is gone."""
    try:
        jobdisk.unmount_under(job_dir)
        JobDisk(job_dir).image.unlink(missing_ok=True)
        remove_tree(job_dir)
    except (SandboxError, TreeError, OSError) as exc:
        log.error("the folder of job %s could not be removed: %s", job_dir.name, exc)
        return False
    return True


def _no_metrics(template: str, outcome: str, seconds: float) -> None:
    """The default of :attr:`JobRun.on_step_end`: nothing observed."""


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
    on_change: Callable[[dict[str, StepDetail], bool], None]
    stop: threading.Event = field(default_factory=threading.Event)
    states: dict[str, StepDetail] = field(default_factory=dict)
    stopreq: int = 0
    # Set when the engine shuts down: the step is killed but its outcome is not recorded, so the next
    # engine's recovery sees it as interrupted (never as the user's stop or the algorithm's failure).
    abandoned: bool = False
    limits_missing: list[str] = field(default_factory=list)
    warm: WarmRunner | None = None  # runs the node's own step programs without a fresh sandbox each
    mounted: dict[str, list[Bind]] = field(default_factory=dict)  # task -> its mounts at its last attempt
    change_unwritten: bool = False  # a state change is held back by the engine (see flush)
    protections: Protections = NO_PROTECTIONS
    identity: Identity | None = None  # the host uid/gid of every sandbox of the job (None: the engine's own)
    max_depth: int = DEFAULT_MAX_DEPTH  # folders deeper than this end a step; publishing skips them
    disk: JobDisk | None = None  # the job's own file system, once made
    reach: Callable[[Path], Path] = Path  # where the job's uid finds a host folder (workflows.local.staging)
    # (template, outcome, seconds) of each step that ended, retries included (never one left to recovery)
    on_step_end: Callable[[str, str, float], None] = _no_metrics
    gpus: tuple[int, ...] = ()  # the host GPUs the engine granted the job (c2d.db.gpu_grants), before run()
    gpus_released: bool = False  # the engine gave the job's GPU grant back (it does so once)

    def _set(self, task: str, *, write: bool = True, **values: Any) -> None:
        known = cast(StepDetail, {key: value for key, value in values.items() if value is not None})
        self.states.setdefault(task, StepDetail()).update(known)
        self.change_unwritten = not write
        self.on_change(self.states, write)

    def flush(self) -> None:
        """Have the engine write the state changes it holds back."""
        if self.change_unwritten:
            self.change_unwritten = False
            self.on_change(self.states, True)

    def phases(self) -> dict[str, str]:
        return {task: state["phase"] for task, state in self.states.items() if "phase" in state}

    # -- folders and mounts -------------------------------------------------------------------
    def prepare(self) -> None:
        """The job's folder and, where the host can, its own file system (made, or mounted again for a job
        resumed after a restart). JobSetupError when the job cannot have them."""
        try:
            self.job_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
            os.chmod(self.job_dir, 0o711)  # the job's uid passes through to its own disk, lists nothing
            (self.job_dir / "steps").mkdir(exist_ok=True, mode=0o700)
        except OSError as exc:
            raise JobSetupError(f"the job's folder cannot be made ({exc.strerror})") from None
        every_step_ran = all(self.states.get(step.task, {}).get("phase") in DONE_PHASES for step in self.plan.steps)
        if not self.protections.job_disks or every_step_ran:  # a resumed job whose steps all ran needs no disk
            return
        disk = JobDisk(self.job_dir)
        try:
            if not disk.ensure_mounted():
                size = self.plan.disk_bytes
                if size is None:
                    raise JobSetupError("the workflow's job volumes do not say their size")
                disk.create(size, self.plan.max_files + INODE_ROOM, self.identity)
        except JobSetupError:
            raise
        except SandboxError as exc:
            raise JobSetupError(str(exc)) from None
        self.disk = disk

    def discard(self) -> None:
        """Unmount and delete the job's file system, then its folder (see :func:`discard_job_folder`)."""
        self.disk = None
        discard_job_folder(self.job_dir)

    def unmount(self) -> None:
        """Unmount the job's file system, keeping its image (a job folder kept for debugging)."""
        if self.disk is not None:
            try:
                jobdisk.unmount_under(self.job_dir)
            except SandboxError as exc:
                log.error("job %s: its disk could not be unmounted: %s", self.job_id, exc)
            self.disk = None

    def _own(self, folder: Path, base: Path, inside: str) -> None:
        """``folder`` made (with the folders between ``base`` and it) and owned by the job's uid, like each level
        made. SandboxError naming ``inside`` (the path in the sandbox) when that fails."""
        made: list[Path] = [folder]
        current = folder.parent
        while current != base and not os.path.lexists(current):
            made.append(current)
            current = current.parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if self.identity is not None:
                for path in made:
                    os.chown(path, self.identity.uid, self.identity.gid, follow_symlinks=False)
        except OSError as exc:
            raise SandboxError(f"the folder mounted on {inside} cannot be made ({exc.strerror})") from None

    def _volume_dir(self, name: str) -> Path:
        return (self.disk.root if self.disk else self.job_dir / "volumes") / name

    def _scratch_dir(self, step: Step, attempt: int, volume: str) -> Path | None:
        """A scratch volume's folder on the job's disk (None without one: a tmpfs of the sandbox)."""
        if self.disk is None:
            return None
        return self.disk.root / ".scratch" / f"{step.task}-{attempt}-{volume}"

    def _binds(self, step: Step, attempt: int = 0) -> list[Bind]:
        binds: list[Bind] = []
        for mount in step.mounts:
            volume = self.plan.volumes[mount.volume]
            if volume.kind == "scratch":
                scratch = self._scratch_dir(step, attempt, volume.name)
                if scratch is not None and self.disk is not None:
                    self._own(scratch, self.disk.root, mount.path)
                binds.append((scratch, mount.path, False, None if scratch else volume.size))
                continue
            if volume.kind == "host":
                base = Path(volume.host_path or "")
                if not base.resolve().is_relative_to(self.store_dir.resolve()):
                    raise SandboxError(f"the hostPath volume of {mount.path} is outside the results store")
                volume_root = self.store_dir
            else:
                base = self._volume_dir(volume.name)
                volume_root = base.parent
            host = _within(base, mount.sub_path, mount.path) if mount.sub_path else base
            self._own(host, volume_root, mount.path)
            binds.append((host, mount.path, mount.read_only, None))
        self.mounted[step.task] = binds
        return binds

    def _hand_back(self, binds: list[Bind]) -> None:
        """The results-store folders a step wrote as the job's uid, owned by the engine again (nothing of the
        job keeps a right on what it published)."""
        if self.identity is None:
            return
        uid, gid = os.geteuid(), os.getegid()
        for host, _, read_only, _ in binds:
            if host is None or read_only or not host.is_relative_to(self.store_dir):
                continue
            try:
                for entry in walk(host, max_depth=self.max_depth + 8):
                    os.chown(entry.name, uid, gid, dir_fd=entry.parent_fd, follow_symlinks=False)
                os.chown(host, uid, gid, follow_symlinks=False)
            except (OSError, TreeError) as exc:  # the results stay where they are, owned by the job's uid
                log.error("job %s: its results could not be handed back to the engine: %s", self.job_id, exc)

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
        return resolve_runtime(step.image, self.engine)

    def _attempt(self, step: Step, attempt: int, deadline: float | None) -> Outcome:
        if step.stage == "publish" and self.disk is not None:
            self.disk.release_reserve()
        try:
            runtime = self._runtime(step)
            binds = self._binds(step, attempt)
            env = step_environment(step, runtime)
            access = self._gpu_access(step)
            env |= access.env
        except (SandboxError, UnsupportedImageError) as exc:
            return Outcome("Error", None, clean_text(str(exc)))
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
                # the step's /tmp: on the job's disk, or in the job's folder
                tmp = self._scratch_dir(step, attempt, "tmp") or self.job_dir / "tmp" / f"{step.task}-{attempt}"
                self._own(tmp, self.disk.root if self.disk else tmp.parent, "/tmp")
                binds = [(host or tmp, inside, ro, size) for host, inside, ro, size in binds]
                start: Callable[[], StepProcess] = functools.partial(
                    self.warm.launch, step, binds, tmp, log_file, rlimits, cgroup
                )
            else:
                start = functools.partial(
                    self._sandbox, step, runtime, binds, env, log_file, rlimits, cgroup, access.args
                )
        except SandboxError as exc:
            cgroup.remove()
            return Outcome("Error", None, clean_text(str(exc)))
        writable = tuple(host for host, _, ro, _ in binds if host is not None and not ro)
        redactions = tuple((str(host), inside) for host, inside, _, _ in binds if host is not None)
        redactions += ((str(self.job_dir), "<job>"), (str(self.store_dir), "<results store>"))
        redactions += tuple((str(path), "<node>") for path in self.hidden)
        redactions += ((str(self.engine.gpu_dev_dir), "/dev"),) if access.devices else ()
        disk_full = self.disk.exhausted if self.disk else None
        if step.disk or step.max_files:
            watch = Watch(writable, step.disk, step.max_files, self.max_depth, disk_full, redactions)
        else:
            watch = Watch((), None, None, self.max_depth, None, redactions)
        step_deadline = time.monotonic() + step.deadline if step.deadline else None
        ends = [d for d in (deadline, step_deadline) if d is not None]
        # Publishing is not interrupted by a stop request: the user's logs and outputs are on their way.
        stop = threading.Event() if step.stage == "publish" else self.stop
        try:
            return run_step(step, start, log_file, cgroup, watch, stop, min(ends) if ends else None, self.flush)
        finally:
            cgroup.remove()
            self._hand_back(binds)

    def _gpu_access(self, step: Step) -> gpu.GpuAccess:
        """The GPUs of ``step``'s sandbox: none for a step that asks for none; GpuUnavailableError rather than
        a GPU step that runs without all its GPUs."""
        if step.gpus == 0:
            return gpu.GpuAccess(())
        if len(self.gpus) != step.gpus:
            raise GpuUnavailableError(f"the job holds {len(self.gpus)} of the {step.gpus} GPU(s) its step needs")
        return gpu.sandbox_access(self.engine.gpu_dev_dir, self.gpus)

    def _sandbox(
        self,
        step: Step,
        runtime: Runtime,
        binds: list[Bind],
        env: dict[str, str],
        log_file: Path,
        rlimits: dict[str, int],
        cgroup: StepCgroup,
        device_args: list[str],
    ) -> SandboxProcess:
        """Start the step as its own bubblewrap sandbox, as the job's uid, with the seccomp filter and a new
        session keyring; the launch prefix joins the step's cgroups first."""
        program = self.protections.seccomp
        launch = Launch([])
        try:  # the filter's descriptor belongs to the launch from here on: bwrap_command closes it on failure
            seccomp_fd = seccomp.program_fd(program) if program is not None else None
            launch = bwrap_command(
                self.engine.bwrap,
                step,
                runtime,
                binds,
                self.hidden,
                seccomp_fd=seccomp_fd,
                reach=self.reach,
                device_args=device_args,
            )
            argv = [*cgroup.prefix(rlimits, self.identity, self.protections.keyctl), *launch.argv]
            return SandboxProcess(argv, env, log_file, setup_channel(log_file), launch.fds)
        except SandboxError as exc:  # run_step reports a start that failed
            raise OSError(0, str(exc)) from None
        finally:
            launch.close()

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

    # -- live log ---------------------------------------------------------------------------
    def algorithm_log(self) -> FileFollow | None:
        """A follow of the algorithm step's log (its stdout and stderr, ``steps/<task>.log``) while that step
        runs; None when it does not. Safe from another thread: it only reads the step states. The follow ends
        once the step's phase leaves ``Running`` (its sandbox is gone by then), or the job is abandoned."""
        for step in self.plan.steps:
            if step.stage == "algorithm" and self._running(step.task):
                log_file = self.job_dir / "steps" / f"{step.task}.log"
                return FileFollow(log_file, functools.partial(self._running, step.task))
        return None

    def _running(self, task: str) -> bool:
        return not self.abandoned and self.states.get(task, {}).get("phase") == "Running"

    # -- the job ----------------------------------------------------------------------------
    def run(self) -> list[ResultEntry] | None:
        """Run every step; returns the result list of the publish step (None if it has none). JobSetupError
        when the job's folder or disk cannot be prepared (before any step)."""
        self.prepare()
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
            began = time.monotonic()
            outcome = self._run_step(step, deadline)
            if self.abandoned:
                return None
            self.on_step_end(step.template, outcome.phase, time.monotonic() - began)
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

    def results(self) -> list[ResultEntry] | None:
        """The result list recorded by the step that declares a ``results`` output (None if none ran)."""
        for step in self.plan.steps:
            recorded = self.states.get(step.task, {}).get("results")
            if "results" in step.outputs and isinstance(recorded, list):
                return recorded
        return None

    def _read_results(self, step: Step) -> list[ResultEntry] | None:
        path = self.host_path(step, step.outputs["results"])
        if path is None or not path.is_file():
            return None
        value = json.loads(path.read_text(encoding="utf-8"))
        return value if isinstance(value, list) else None

    def cleanup(self) -> None:
        self.discard()
