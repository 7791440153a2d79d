"""Child processes of the embedded stack: own process group, die with their parent, recorded on disk.

Each process runs in a new session (its own process group, so a stop reaches every process it forked)
and asks the kernel to signal it when its parent dies (``PR_SET_PDEATHSIG``), so a crashed supervisor
leaves no orphan. A pid file (pid + kernel start time, so a recycled pid is never killed by mistake)
lets ``c2d down`` stop what a dead supervisor left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from c2d.exceptions import StackError

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: signal.Signals, parent_pid: int) -> Callable[[], None]:
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:  # runs in the child between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def process_start_time(pid: int) -> int | None:
    """Kernel start time of a live process (clock ticks since boot); None when it does not exist or
    is a zombie (dead, waiting for a reaper that may never come when PID 1 does not reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class ProcessSpec:
    """What to run and how to stop it."""

    name: str
    argv: Sequence[str]
    log_file: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 15.0
    extra_env: dict[str, str] = field(default_factory=dict)


class ManagedProcess:
    """One child process of the stack."""

    def __init__(self, spec: ProcessSpec, run_dir: Path) -> None:
        self.spec = spec
        self.pid_file = run_dir / f"{spec.name}.pid"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        self.spec.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        env = dict(self.spec.env if self.spec.env is not None else os.environ)
        env.update(self.spec.extra_env)
        with self.spec.log_file.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.spec.name}\n".encode())
            log.flush()
            try:
                self._popen = subprocess.Popen(
                    list(self.spec.argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.spec.cwd,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(self.spec.stop_signal, os.getpid()),
                )
            except OSError as exc:
                raise StackError(f"cannot start {self.spec.name} ({self.spec.argv[0]}): {exc}") from exc
        record = {
            "pid": self._popen.pid,
            "start": process_start_time(self._popen.pid),
            "argv0": self.spec.argv[0],
        }
        self.pid_file.write_text(json.dumps(record))

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def stop(self) -> None:
        if self._popen is not None:
            stop_group(self._popen.pid, self.spec.stop_signal, self.spec.stop_timeout, self._popen.wait)
            self._popen = None
        self.pid_file.unlink(missing_ok=True)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.spec.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def fail(self, what: str) -> StackError:
        """An error naming this process, what failed, its log file and its last log line."""
        tail = self.log_tail(1)
        hint = f" (last log line: {tail.strip()})" if tail else ""
        return StackError(f"{self.spec.name} {what}; see {self.spec.log_file}{hint}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pgid: int, sig: signal.Signals, timeout: float, reap: Callable[..., object] | None = None) -> None:
    """Signal a process group, wait up to ``timeout`` for it to vanish, then SIGKILL what is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reap is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                reap(timeout=0.05)
        if not _group_alive(pgid):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if reap is not None:
        reap()


def stop_recorded(run_dir: Path, timeout: float = 10.0) -> list[str]:
    """Stop every process group recorded in ``run_dir`` that is still the same process. Returns names."""
    stopped: list[str] = []
    for pid_file in sorted(run_dir.glob("*.pid")):
        try:
            record = json.loads(pid_file.read_text())
            pid, start = int(record["pid"]), record.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            pid_file.unlink(missing_ok=True)
            continue
        if process_start_time(pid) is not None and process_start_time(pid) == start:
            stop_group(pid, signal.SIGTERM, timeout)
            stopped.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return stopped


def recorded_alive(run_dir: Path) -> list[str]:
    """Names of recorded processes that are still running."""
    alive: list[str] = []
    for pid_file in sorted(run_dir.glob("*.pid")):
        try:
            record = json.loads(pid_file.read_text())
            start = record.get("start")
            if start is not None and process_start_time(int(record["pid"])) == start:
                alive.append(pid_file.stem)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return alive


def wait_until(
    ready: Callable[[], bool], proc: ManagedProcess | None, timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll ``ready`` until it is true; fail fast with the log tail if ``proc`` exits meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and not proc.alive():
            code = proc.exit_code()
            raise proc.fail(f"exited with code {code} while starting")
        if ready():
            return
        if time.monotonic() > deadline:
            if proc is not None:
                raise proc.fail(f"was not {what} after {timeout:.0f} s")
            raise StackError(f"{what} not reached after {timeout:.0f} s")
        time.sleep(interval)
