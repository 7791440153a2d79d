"""Runs the stack until told to stop: in the foreground (``c2d up``) or detached (``c2d up --detach``).

The supervisor is the parent of every stack process, so when it dies (even by SIGKILL) the kernel
signals its children (PR_SET_PDEATHSIG): no orphans. Detached, it records itself in
``<run_dir>/supervisor.json`` so ``c2d down`` can find it; its start-up progress is streamed to the
launching CLI through a pipe, terminated by a READY or FAILED line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from c2d.exceptions import C2DError, StackError
from c2d.settings import Settings, load_settings
from c2d.stack.procs import ManagedProcess, process_start_time, stop_group, stop_recorded
from c2d.stack.stack import Stack

READY = "READY"
FAILED = "FAILED"


class _Stop(Exception):
    """Raised by the signal handler to leave the wait loop."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _supervisor_file(settings: Settings) -> Path:
    return settings.run_dir / "supervisor.json"


def _dead_process(stack: Stack) -> ManagedProcess | None:
    for component in stack.components:
        proc = getattr(component, "proc", None)
        if isinstance(proc, ManagedProcess) and proc.pid is not None and not proc.alive():
            return proc
    return None


def run(settings: Settings, echo: Callable[[str], None], on_ready: Callable[[], None] = lambda: None) -> int:
    """Start the stack, wait for SIGINT/SIGTERM (or a component dying), stop it. Returns an exit code."""
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stack = Stack(settings, echo)
    try:
        try:
            states = stack.up()
        except _Stop:
            echo("interrupted while starting; stopping")
            stack.down()
            return 130
        for state in states:
            echo(f"  {'ok ' if state.healthy else 'BAD'} {state.name:<10} {state.detail}")
        on_ready()
        try:
            while True:
                time.sleep(0.5)
                dead = _dead_process(stack)
                if dead is not None:
                    echo(f"error: {dead.fail(f'exited unexpectedly with code {dead.exit_code()}')}")
                    stack.down()
                    return 1
        except _Stop as reason:
            echo(f"received {reason}; stopping the stack")
            stack.down()
            echo("stack stopped")
            return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def spawn_detached(settings: Settings, echo: Callable[[str], None]) -> None:
    """Start a detached supervisor and relay its start-up progress; raise StackError when it fails."""
    existing = running_supervisor(settings)
    if existing is not None:
        raise StackError(f"the stack is already running (supervisor pid {existing}); `c2d down` stops it")
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, C2D_DATA_DIR=str(settings.data_dir))
    with (settings.log_dir / "supervisor.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "c2d.stack.supervisor"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=True,
            text=True,
        )
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip("\n")
        if line == READY:
            return
        if line == FAILED:
            break
        echo(line)
    proc.wait(timeout=60)
    raise StackError(f"the stack did not start; see {settings.log_dir / 'supervisor.log'}")


def running_supervisor(settings: Settings) -> int | None:
    """Pid of the detached supervisor of this data dir, when it runs."""
    try:
        record = json.loads(_supervisor_file(settings).read_text())
        pid, start = int(record["pid"]), record["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if start is not None and process_start_time(pid) == start else None


def stop(settings: Settings, echo: Callable[[str], None]) -> bool:
    """Stop the detached supervisor (which stops its stack) and anything left over. True if any ran."""
    stopped_any = False
    pid = running_supervisor(settings)
    if pid is not None:
        echo(f"stopping supervisor (pid {pid})")
        stop_group(pid, signal.SIGTERM, timeout=60)
        stopped_any = True
    _supervisor_file(settings).unlink(missing_ok=True)
    for name in stop_recorded(settings.run_dir):
        echo(f"stopped leftover {name}")
        stopped_any = True
    return stopped_any


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _daemon_main() -> int:
    settings = load_settings()
    log = (settings.log_dir / "supervisor.log").open("a", buffering=1)
    relay: list[bool] = [True]

    def echo(message: str) -> None:
        log.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        if relay[0]:
            _say(message)

    def ready() -> None:
        settings.run_dir.mkdir(parents=True, exist_ok=True)
        me = os.getpid()
        _supervisor_file(settings).write_text(json.dumps({"pid": me, "start": process_start_time(me)}))
        _say(READY)
        relay[0] = False
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the launching CLI is gone: never write to its pipe again

    try:
        code = run(settings, echo, ready)
    except C2DError as exc:
        echo(f"error: {exc}")
        if relay[0]:
            _say(FAILED)
        code = 1
    finally:
        _supervisor_file(settings).unlink(missing_ok=True)
    return code


if __name__ == "__main__":
    sys.exit(_daemon_main())
