"""Run one step of a job in its sandbox and watch it: stop requests, deadline, disk, file and depth caps.

The step's stdout/stderr go to ``<job dir>/steps/<task>.log`` (the algorithm's own output is also
tee'd by its command into /data/logs/algorithm.log, readable while it runs). What the sandbox's setup
says (bubblewrap's errors, the launch prefix's ``c2d-step:`` lines) goes to ``<task>.setup``, a file the
step cannot write: only that channel can make a step's end read "sandbox setup failed". Every message
that becomes a job's status text is cleaned (:func:`clean_text`: no control characters, no host paths).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from c2d.fstree import DEFAULT_MAX_DEPTH, usage
from workflows.local.cgroups import StepCgroup
from workflows.local.interpret import Step

POLL = 0.05
SCAN_EVERY = 0.5
DISK_SLACK = 1.10  # rlimit/scan tolerance before the cap is declared exceeded
MESSAGE_MAX = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class Outcome:
    phase: str  # Succeeded | Failed | Error (Argo node phases)
    exit_code: int | None
    message: str | None = None
    reason: str | None = None  # stopped | deadline | oom | disk | files | None


@dataclass(frozen=True)
class Watch:
    """Caps checked while the step runs (apparent bytes, files and folder depth under ``writable``), what tells
    that a failed write hit the job's file system's limits (``disk_full``: "disk", "files" or None), and
    ``redactions``: host paths and what a message shows instead (``/data/outputs`` for the folder mounted
    there)."""

    writable: tuple[Path, ...]
    disk: int | None
    max_files: int | None
    max_depth: int = DEFAULT_MAX_DEPTH
    disk_full: Callable[[], str | None] | None = None
    redactions: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def scans(self) -> bool:
        return bool(self.writable)


def clean_text(text: str, redactions: tuple[tuple[str, str], ...] = ()) -> str:
    """``text`` fit for a status text: host paths replaced (longest first), control characters (C0, C1, line
    separators: a terminal escape, a NUL Postgres refuses, a forged line) turned into one space each run,
    at most MESSAGE_MAX characters."""
    for host, shown in sorted(redactions, key=lambda pair: len(pair[0]), reverse=True):
        text = text.replace(host, shown)
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates either
    return _CONTROL.sub(" ", text).strip()[:MESSAGE_MAX]


class StepProcess(Protocol):
    """A started step: a sandboxed process of its own, or a child of the warm step runner."""

    pid: int  # leads its own process group

    def poll(self) -> int | None: ...

    def wait_exit(self, timeout: float) -> None:
        """Return when the process has exited, or after ``timeout`` seconds."""
        ...

    def wait(self) -> int: ...


class SandboxProcess:
    """A step run as its own bubblewrap sandbox (``argv``, with the descriptors ``fds`` it names), output
    appended to ``log_file``, the launch's own errors to ``setup_file``."""

    def __init__(self, argv: list[str], env: dict[str, str], log_file: Path, setup_file: Path, fds: list[int]) -> None:
        with open(log_file, "ab") as log, open(setup_file, "ab") as setup:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=setup,
                start_new_session=True,
                env=env,
                pass_fds=fds,
            )
        self.pid = self.proc.pid
        try:  # readable when the process exits (Linux >= 5.3): the wait ends at once
            self.pidfd: int | None = os.pidfd_open(self.pid)
        except OSError:
            self.pidfd = None

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait_exit(self, timeout: float) -> None:
        if self.pidfd is None:
            time.sleep(timeout)
            return
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        poller.poll(timeout * 1000)

    def wait(self) -> int:
        code = self.proc.wait()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        return code


def run_step(
    step: Step,
    start: Callable[[], StepProcess],
    log_file: Path,
    cgroup: StepCgroup,
    watch: Watch,
    stop: threading.Event,
    deadline: float | None,
    on_running: Callable[[], None] | None = None,
) -> Outcome:
    """Start the step and wait for it, killing it on stop/deadline/cap. ``deadline`` is monotonic.
    ``on_running`` is called once if the step still runs after its first POLL seconds."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = start()
    except OSError as exc:
        return Outcome("Error", None, f"could not start the sandbox: {exc.strerror or exc}")
    reason: str | None = None
    running_since = time.monotonic()
    next_scan = running_since + SCAN_EVERY
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if on_running is not None and now - running_since >= POLL:
                on_running()
                on_running = None
            if stop.is_set():
                reason = "stopped"
            elif deadline is not None and now >= deadline:
                reason = "deadline"
            elif now >= next_scan and watch.scans:
                next_scan = now + SCAN_EVERY
                reason = _over_caps(watch)
            if reason:
                _kill(proc, cgroup)
                break
            proc.wait_exit(POLL)
        code = proc.wait()
    finally:
        if proc.poll() is None:
            _kill(proc, cgroup)
        cgroup.kill()
    return step_outcome(step, code, reason, cgroup, watch, log_file)


def _over_caps(watch: Watch) -> str | None:
    used = usage(watch.writable, max_files=watch.max_files, max_depth=watch.max_depth)
    if watch.disk and used.bytes > watch.disk * DISK_SLACK:
        return "disk"
    if watch.max_files and used.files > watch.max_files:
        return "files"
    if used.depth > watch.max_depth:
        return "depth"
    return None


def _kill(proc: StepProcess, cgroup: StepCgroup) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    cgroup.kill()
    proc.wait()


def _mib(value: int | None) -> str:
    return f"{(value or 0) / 1024**2:.0f} MiB"


def step_outcome(step: Step, code: int, reason: str | None, cgroup: StepCgroup, watch: Watch, log: Path) -> Outcome:
    """What a step's end means (its Argo phase and message): the exit code, why it was killed if it was,
    its cgroup's OOM count, a full job file system, sandbox or launch errors (from the setup channel next to
    ``log``, ``<task>.setup``), and for the node's own steps the last ERROR line of their log."""
    outcome = _outcome(step, code, reason, cgroup, watch, log)
    if outcome.message is None:
        return outcome
    return Outcome(outcome.phase, outcome.exit_code, clean_text(outcome.message, watch.redactions), outcome.reason)


def _outcome(step: Step, code: int, reason: str | None, cgroup: StepCgroup, watch: Watch, log: Path) -> Outcome:
    if reason is None and code != 0 and watch.scans:
        reason = _cap_hit(watch)  # the file system or the file-size rlimit stopped a write before a scan saw it
    if reason == "stopped":
        return Outcome("Failed", code, "stopped on request", reason)
    if reason == "deadline":
        return Outcome("Failed", code, f"deadline of {step.deadline} s exceeded", reason)
    if reason == "disk":
        return Outcome("Failed", code, f"wrote more than the {_mib(watch.disk)} disk limit", reason)
    if reason == "files":
        return Outcome("Failed", code, f"wrote more than {watch.max_files} files", reason)
    if reason == "depth":
        return Outcome("Failed", code, f"made folders nested deeper than {watch.max_depth} levels", reason)
    if code == 0:
        return Outcome("Succeeded", 0)
    if cgroup.oom_killed():
        return Outcome("Failed", code, f"out of memory (limit {_mib(step.memory)})", "oom")
    if code < 0:
        return Outcome("Failed", code, f"killed by signal {signal.Signals(-code).name}")
    setup = _tail(setup_channel(log))
    if setup_error := _last(setup, "bwrap: "):
        return Outcome("Error", code, f"sandbox setup failed: {setup_error}")
    if code == 125 and (launch_error := _last(setup, "c2d-step: ")):
        return Outcome("Error", code, launch_error)
    # The node's own steps (fetch, publish) end with an ERROR line that says what went wrong.
    reason = _last(_tail(log), " ERROR ") if step.stage in ("configure", "publish") else None
    return Outcome("Failed", code, reason or f"exit code {code}")


def _cap_hit(watch: Watch) -> str | None:
    """Which cap a failed step ran into, if it ran into one: the job's file system out of space or inodes, or
    its writable folders at the disk cap."""
    if watch.disk_full is not None and (exhausted := watch.disk_full()):
        return exhausted
    if watch.disk and usage(watch.writable).bytes >= watch.disk:
        return "disk"
    return None


def setup_channel(log: Path) -> Path:
    """Where the launch of the step logging to ``log`` writes its own errors."""
    return log.with_suffix(".setup")


def _tail(log: Path) -> list[str]:
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            return handle.read().decode("utf-8", "replace").splitlines()[-5:]
    except OSError:
        return []


def _last(lines: list[str], marker: str) -> str | None:
    for line in reversed(lines):
        if line.startswith(marker) or (marker == " ERROR " and marker in line):
            return line.split(marker, 1)[1].strip()[:MESSAGE_MAX]
    return None
