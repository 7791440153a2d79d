"""Run one step of a job in its sandbox and watch it: stop requests, deadline, disk and file caps.

The step's stdout/stderr go to ``<job dir>/steps/<task>.log`` (the algorithm's own output is also
tee'd by its command into /data/logs/algorithm.log, readable while it runs).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workflows.local.cgroups import StepCgroup
from workflows.local.interpret import Step

POLL = 0.05
SCAN_EVERY = 0.5
DISK_SLACK = 1.10  # rlimit/scan tolerance before the cap is declared exceeded


@dataclass(frozen=True)
class Outcome:
    phase: str  # Succeeded | Failed | Error (Argo node phases)
    exit_code: int | None
    message: str | None = None
    reason: str | None = None  # stopped | deadline | oom | disk | files | None


@dataclass(frozen=True)
class Watch:
    """Caps checked while the step runs."""

    writable: tuple[Path, ...]
    disk: int | None
    max_files: int | None


def _usage(folders: tuple[Path, ...], max_files: int | None) -> tuple[int, int]:
    """(bytes, files) under the folders; stops counting files past ``max_files``."""
    total = count = 0
    stack = [str(f) for f in folders]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        count += 1
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue
                if max_files is not None and count > max_files:
                    return total, count
    return total, count


class StepProcess(Protocol):
    """A started step: a sandboxed process of its own, or a child of the warm step runner."""

    pid: int  # leads its own process group

    def poll(self) -> int | None: ...

    def wait_exit(self, timeout: float) -> None:
        """Return when the process has exited, or after ``timeout`` seconds."""
        ...

    def wait(self) -> int: ...


class SandboxProcess:
    """A step run as its own bubblewrap sandbox (``argv``), output appended to ``log_file``."""

    def __init__(self, argv: list[str], env: dict[str, str], log_file: Path) -> None:
        with open(log_file, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
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
            elif now >= next_scan and (watch.disk or watch.max_files):
                next_scan = now + SCAN_EVERY
                used, files = _usage(watch.writable, watch.max_files)
                if watch.disk and used > watch.disk * DISK_SLACK:
                    reason = "disk"
                elif watch.max_files and files > watch.max_files:
                    reason = "files"
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


def _kill(proc: StepProcess, cgroup: StepCgroup) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    cgroup.kill()
    proc.wait()


def _mib(value: int | None) -> str:
    return f"{(value or 0) / 1024**2:.0f} MiB"


def step_outcome(step: Step, code: int, reason: str | None, cgroup: StepCgroup, watch: Watch, log: Path) -> Outcome:
    """What a step's end means (its Argo phase and message): the exit code, why it was killed if it was,
    its cgroup's OOM count, and the last lines of its log (sandbox or launch errors, the step's ERROR)."""
    if reason is None and code != 0 and watch.disk and _usage(watch.writable, None)[0] >= watch.disk:
        reason = "disk"  # the file-size rlimit stopped a write (EFBIG) before the next scan saw it
    if reason == "stopped":
        return Outcome("Failed", code, "stopped on request", reason)
    if reason == "deadline":
        return Outcome("Failed", code, f"deadline of {step.deadline} s exceeded", reason)
    if reason == "disk":
        return Outcome("Failed", code, f"wrote more than the {_mib(watch.disk)} disk limit", reason)
    if reason == "files":
        return Outcome("Failed", code, f"wrote more than {watch.max_files} files", reason)
    if code == 0:
        return Outcome("Succeeded", 0)
    if cgroup.oom_killed():
        return Outcome("Failed", code, f"out of memory (limit {_mib(step.memory)})", "oom")
    if code < 0:
        return Outcome("Failed", code, f"killed by signal {signal.Signals(-code).name}")
    lines = _tail(log)
    setup_error = _last(lines, "bwrap: ")
    if setup_error:
        return Outcome("Error", code, f"sandbox setup failed: {setup_error}")
    if code == 125 and (launch_error := _last(lines, "c2d-step: ")):
        return Outcome("Error", code, launch_error)
    # The node's own steps (fetch, publish) end with an ERROR line that says what went wrong.
    reason = _last(lines, " ERROR ") if step.stage in ("configure", "publish") else None
    return Outcome("Failed", code, reason or f"exit code {code}")


def _tail(log: Path) -> list[str]:
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - 4096))
            return handle.read().decode("utf-8", "replace").splitlines()[-5:]
    except OSError:
        return []


def _last(lines: list[str], marker: str) -> str | None:
    for line in reversed(lines):
        if marker in line:
            return line.split(marker, 1)[1].strip()[:300]
    return None
