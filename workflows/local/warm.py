"""Engine side of the warm step runners (:mod:`workflows.local.stepserver`).

The node's own step programs (input-fetch, output-publish, result-filter) then start in about a
millisecond instead of a fresh sandbox and interpreter each (~0.1-0.2 s): the runner forks a child,
which joins the step's cgroups through descriptors the engine sent with the request, and the engine sends
it the step (paths mapped from the Workflow's mounts to the host folders they stand for); the child
confines itself with Landlock to its own job's folders, and loads the seccomp filter.
There is one runner per job uid (:class:`WarmRunners`, each started when a job first needs it), running
as that uid: a job's children never share a uid with another running job's.
Used when the kernel has Landlock ABI >= 6 and ``C2D_ENGINE__WARM_STEPS`` is on; otherwise, and for
every other step (the algorithm above all), each step is its own bubblewrap sandbox.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from c2d.settings import EngineSettings
from workflows.exceptions import SandboxError
from workflows.local.cgroups import StepCgroup
from workflows.local.identity import Identity
from workflows.local.interpret import Step
from workflows.local.landlock import MIN_ABI, abi_version
from workflows.local.runner import setup_channel
from workflows.local.sandbox import SYSTEM_DIRS, Bind, bwrap_command, step_environment, steps_runtime
from workflows.local.seccomp import program, program_fd
from workflows.local.stepserver import PROGRAMS

log = logging.getLogger(__name__)
START_TIMEOUT = 10.0
CODE_PACKAGES = ("steps", "c2d", "workflows")  # never the whole checkout: the node's data dir may be in it


@dataclass
class _Pending:
    started: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    pid: int | None = None
    fd: int | None = None
    code: int | None = None


class WarmProcess:
    """A step running as a child of the warm runner (the StepProcess of workflows.local.runner)."""

    def __init__(self, pending: _Pending, pid: int) -> None:
        self.pending = pending
        self.pid = pid

    def poll(self) -> int | None:
        return self.code() if self.pending.ended.is_set() else None

    def wait_exit(self, timeout: float) -> None:
        self.pending.ended.wait(timeout)

    def wait(self) -> int:
        self.pending.ended.wait()
        return self.code()

    def code(self) -> int:
        # None: the runner died with the child; reported like a killed process
        return self.pending.code if self.pending.code is not None else -9


class WarmRunner:
    """One runner. ``identity``: the host uid it and its children run as (None: the engine's own);
    ``seccomp``: its children load the filter; ``keyctl``: the tool that gives the runner a new session
    keyring (its children each join another one of their own)."""

    def __init__(
        self,
        engine: EngineSettings,
        repo_root: Path,
        writable: tuple[Path, ...],
        hidden: tuple[Path, ...],
        *,
        identity: Identity | None = None,
        seccomp: bool = False,
        keyctl: str | None = None,
        reach: Callable[[Path], Path] = Path,
    ):
        self.engine = engine
        self.repo_root = repo_root
        self.writable = writable  # the jobs folder and the results store
        self.hidden = hidden
        self.identity = identity
        self.seccomp = seccomp
        self.keyctl = keyctl
        self.reach = reach
        self.runtime = steps_runtime(repo_root)
        # what every child may read: the system, the interpreters, the code (never the whole checkout)
        system = [path for path in SYSTEM_DIRS if Path(path).exists()] + ["/etc", "/dev/null", "/dev/urandom"]
        self.runtime_paths = [*system, sys.prefix, sys.base_prefix, *(str(repo_root / p) for p in CODE_PACKAGES)]
        self.pending: dict[int, _Pending] = {}
        self.ids = itertools.count(1)
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.alive = False

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, log_file: Path) -> bool:
        """Start the runner; False (and the reason logged) when it cannot be used here."""
        abi = abi_version()
        if abi < MIN_ABI:
            log.info("warm step runner off: Landlock ABI %s < %s; every step gets its own sandbox", abi, MIN_ABI)
            return False
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        flags = [*(["--seccomp"] if self.seccomp else []), *(["--keyring"] if self.keyctl else [])]
        server = Step.bare(
            "stepserver",
            "configure",
            self.engine.step_image,
            ["python", "-m", "workflows.local.stepserver", str(theirs.fileno()), *flags],
            egress=True,
        )
        binds: list[Bind] = [(path, str(path), False, None) for path in self.writable]
        try:  # the runner runs under the filter too, with one more call allowed: see seccomp.program
            seccomp_fd = program_fd(program(join_keyring=self.keyctl is not None)) if self.seccomp else None
            launch = bwrap_command(
                self.engine.bwrap,
                server,
                self.runtime,
                binds,
                self.hidden,
                host_pids=True,
                seccomp_fd=seccomp_fd,
                reach=self.reach,
            )
        except SandboxError as exc:
            log.error("warm step runner off: %s", exc)
            ours.close()
            theirs.close()
            return False
        keyring = [self.keyctl, "session", "-"] if self.keyctl else []
        log_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(log_file, "ab") as out:
                self.proc = subprocess.Popen(
                    [*(self.identity.become() if self.identity else []), *keyring, *launch.argv],
                    env=step_environment(server, self.runtime),
                    pass_fds=[theirs.fileno(), *launch.fds],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        finally:
            launch.close()
            theirs.close()
        self.sock = ours
        self.alive = True
        threading.Thread(target=self._read, name="c2d-warm-steps", daemon=True).start()
        return True

    def close(self) -> None:
        self.alive = False
        if self.sock is not None:
            # shutdown, not only close: our reader thread is blocked in recv on this socket, which keeps
            # it open (no EOF for the runner) until the socket is shut down
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()  # the runner kills its children and exits at EOF
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _read(self) -> None:
        assert self.sock is not None
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self.sock, 4096, 1)
            except OSError:
                data, fds = b"", []
            if not data:
                break
            message: dict[str, Any] = json.loads(data)
            with self.lock:
                pending = self.pending.get(int(message["id"]))
            if pending is None:
                for fd in fds:
                    os.close(fd)
                continue
            if "pid" in message:
                pending.pid, pending.fd = int(message["pid"]), fds[0] if fds else None
                pending.started.set()
            else:
                pending.code = int(message["exit"])
                pending.ended.set()
                with self.lock:
                    self.pending.pop(int(message["id"]), None)
        if self.alive:
            log.error("the warm step runner stopped; steps run in their own sandboxes from now on")
        self.alive = False
        with self.lock:
            left, self.pending = list(self.pending.values()), {}
        for pending in left:
            pending.started.set()
            pending.ended.set()

    # -- steps --------------------------------------------------------------------------------
    def supports(self, step: Step) -> bool:
        command = step.command
        return (
            self.alive
            and step.gpus == 0  # its children get no device: a GPU step is its own sandbox
            and step.image == self.engine.step_image
            and len(command) >= 3
            and command[:2] == ["python", "-m"]
            and command[2] in PROGRAMS
        )

    def launch(
        self, step: Step, binds: list[Bind], tmp: Path, log_file: Path, rlimits: dict[str, int], cgroup: StepCgroup
    ) -> WarmProcess:
        """Fork the step's child, which joins ``cgroup`` before anything else; send it the step. ``binds``:
        the step's mounts with every scratch volume already mapped to a host folder (``tmp`` holds /tmp)."""
        if self.sock is None or not self.alive:
            raise OSError("the warm step runner is not running")
        groups = cgroup.open_tasks()
        request_id = next(self.ids)
        pending = _Pending()
        with self.lock:
            self.pending[request_id] = pending
        try:
            logs = [os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    for path in (log_file, setup_channel(log_file))]  # fmt: skip
            groups += logs
            spawn = {"op": "spawn", "id": request_id, "groups": len(groups) - len(logs)}
            socket.send_fds(self.sock, [json.dumps(spawn).encode()], groups)
        except OSError:
            with self.lock:
                self.pending.pop(request_id, None)
            raise
        finally:
            for fd in groups:
                os.close(fd)
        if not pending.started.wait(START_TIMEOUT) or pending.pid is None or pending.fd is None:
            with self.lock:  # a late answer finds nobody waiting: its pipe is closed, the child exits
                self.pending.pop(request_id, None)
            raise OSError("the warm step runner did not start the step")
        read_write = [str(host) for host, _, read_only, _ in binds if host is not None and not read_only]
        read_only = [str(host) for host, _, ro, _ in binds if host is not None and ro] + self.runtime_paths
        env = step_environment(step, self.runtime) | {"HOME": str(tmp), "TMPDIR": str(tmp)}
        request = {
            "module": step.command[2],
            "argv": [host_path(arg, binds) for arg in step.command[3:]],
            "env": env,
            "cwd": host_path(step.working_dir, binds) if step.working_dir else str(tmp),
            "read_only": read_only,
            "read_write": [*read_write, str(tmp)],
            "rlimits": rlimits,
        }
        with contextlib.suppress(BrokenPipeError), os.fdopen(pending.fd, "wb") as pipe:  # killed already: ends
            pipe.write(json.dumps(request).encode())
        return WarmProcess(pending, pending.pid)


class WarmRunners:
    """The runners of one engine, one per job uid, each started when a job of that uid first asks for it. A
    runner that died is not restarted: its uid's steps get their own sandboxes from then on.

    Runners are started from one thread of their own, which lives as long as they do: a runner dies with the
    thread that started it (bubblewrap's ``--die-with-parent`` is a parent-death signal, and Linux sends it
    when the parent *thread* ends), and the engine thread that first needs a runner may be short-lived."""

    def __init__(self, make: Callable[[Identity | None], WarmRunner], log_dir: Path) -> None:
        """``make(identity)``: a runner, not started, for the jobs of that identity (None: the engine's own uid)."""
        self.make, self.log_dir = make, log_dir
        self.runners: dict[int | None, WarmRunner] = {}
        self.lock = threading.Lock()
        self.starter = ThreadPoolExecutor(1, thread_name_prefix="c2d-warm-start")

    def usable(self) -> bool:
        """Whether this kernel can confine warm children (Landlock ABI >= MIN_ABI)."""
        abi = abi_version()
        if abi < MIN_ABI:
            log.info("warm step runner off: Landlock ABI %s < %s; every step gets its own sandbox", abi, MIN_ABI)
        return abi >= MIN_ABI

    def runner(self, identity: Identity | None) -> WarmRunner | None:
        """The runner of ``identity``'s uid, started now if it never was (None: it could not start)."""
        key = identity.uid if identity else None
        with self.lock:
            runner = self.runners.get(key)
            if runner is None:
                runner = self.make(identity)
                name = "stepserver.log" if key is None else f"stepserver-{key}.log"
                self.starter.submit(runner.start, self.log_dir / name).result()
                self.runners[key] = runner
        return runner if runner.alive else None

    def all(self) -> list[WarmRunner]:
        with self.lock:
            return list(self.runners.values())

    def close(self) -> None:
        for runner in self.all():
            runner.close()
        self.starter.shutdown()


def host_path(value: str, binds: list[Bind]) -> str:
    """A path inside the step (``/data/outputs``) as the host folder it is mounted from; anything else as is."""
    for host, inside, _, _ in sorted(binds, key=lambda bind: len(bind[1]), reverse=True):
        if host is not None and (value == inside or value.startswith(inside.rstrip("/") + "/")):
            return str(host) + value[len(inside.rstrip("/")) :]
    return value
