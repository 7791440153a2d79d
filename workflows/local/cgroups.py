"""cgroup v1 limits for one sandboxed step: memory (OOM-kill inside the group), pids, CPU quota.

The step's first process joins the groups before it execs anything (see :meth:`StepCgroup.prefix`),
so every descendant is counted and :meth:`StepCgroup.kill` reaches all of them. It joins by writing ``0``
into each group's ``tasks``: that moves the writing thread — all of a single-threaded process — without
the kernel's global lock that writing a pid into ``cgroup.procs`` (or ``tasks``) takes, whose first use
after a quiet while waits for an RCU grace period (~11 ms of each step's start on this VM). Controllers that
cannot be used here (no cgroup v1 mount, no permission) are reported in ``missing``; the sandbox then
falls back to rlimits (address space) and says so in the job's details.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from workflows.local.identity import Identity

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
STALE_AFTER = 600.0  # seconds: a step group empty and this old was left by an engine that was killed
JOBS_CPU_SHARES = 256  # all job steps together weigh a quarter of one node process under contention
# rlimit -> (sh's ulimit flag, its unit): POSIX counts -c and -f in 512-byte blocks; -v (dash, bash) in KiB
ULIMITS = {"core": ("c", 512), "nofile": ("n", 1), "fsize": ("f", 512), "as": ("v", 1024)}


@functools.cache
def _own_path(controller: str) -> str:
    """This process's cgroup path for a v1 controller, from /proc/self/cgroup (read once: the node's
    processes never move between groups)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return path.lstrip("/")
    return ""


def _jobs_group(root: Path, controller: str) -> Path:
    """The group under which every step's group of ``controller`` is made (``c2d`` below this process's)."""
    return root / controller / _own_path(controller) / "c2d"


def prepare_jobs_group(root: Path) -> bool:
    """Give the group that holds every step a low CPU weight: when the machine is saturated, the node's
    own processes (the API, the engine, Postgres) still get the CPU they need. False if not possible."""
    group = _jobs_group(root, "cpu")
    try:
        group.mkdir(parents=True, exist_ok=True)
        (group / "cpu.shares").write_text(str(JOBS_CPU_SHARES))
    except OSError:
        return False
    return True


def remove_stale_groups(root: Path, min_age: float = STALE_AFTER) -> int:
    """Remove the empty step groups older than ``min_age`` seconds (an engine killed mid-step never
    removed its own); returns how many. A group with a process in it is never removed (the kernel
    refuses), and the age spares a group that an engine on this host has just created for its step."""
    removed = 0
    now = time.time()
    for controller in CONTROLLERS:
        try:
            entries = list(os.scandir(_jobs_group(root, controller)))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False) and now - entry.stat().st_mtime >= min_age:
                    os.rmdir(entry.path)
                    removed += 1
            except OSError:  # in use, or removed by its own engine meanwhile
                continue
    return removed


@dataclass
class StepCgroup:
    groups: dict[str, Path] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @classmethod
    def create(cls, root: Path, name: str, *, memory: int | None, pids: int | None, cpu: float | None) -> StepCgroup:
        made = cls()
        wanted = {"memory": memory, "pids": pids, "cpu": cpu}
        for controller, value in wanted.items():
            if value is None:
                continue
            parent = _jobs_group(root, controller)
            group = parent / name
            try:
                group.mkdir(parents=True, exist_ok=True)
                if controller == "memory":
                    _write(group / "memory.limit_in_bytes", int(value))
                    if _has_memsw(parent):  # no swapping around the limit
                        _write(group / "memory.memsw.limit_in_bytes", int(value))
                elif controller == "pids":
                    _write(group / "pids.max", int(value))
                else:
                    _write(group / "cpu.cfs_period_us", CPU_PERIOD_US)
                    _write(group / "cpu.cfs_quota_us", max(1000, int(float(value) * CPU_PERIOD_US)))
            except OSError:
                made.missing.append(controller)
                _rmdir(group)
                continue
            made.groups[controller] = group
        return made

    def prefix(
        self, rlimits: dict[str, int], identity: Identity | None = None, keyring: str | None = None
    ) -> list[str]:
        """Command prefix, one shell as the engine's user: join every group (the shell is single-threaded),
        set the resource limits (``core``, ``nofile``, ``fsize`` and ``as`` in bytes or files), then exec the
        rest of the command line: as ``identity`` (:meth:`Identity.become`), through ``keyring`` (``keyctl``:
        ``keyctl session -`` gives it a new, empty session keyring) when given. The engine starts it with
        vfork: a fork of the engine's large process (what ``Popen(user=...)`` does) cost ~10 ms of CPU per
        step. On failure: a ``c2d-step:`` line on stderr and exit code 125."""
        fail = '{ echo "c2d-step: could not %s" >&2; exit 125; }'
        script = f'while [ "$1" != -- ]; do echo 0 > "$1" || {fail % "join a cgroup"}; shift; done; shift; '
        for name, value in rlimits.items():
            flag, unit = ULIMITS[name]
            limit = f"ulimit -{flag} {-(-int(value) // unit)}"  # rounded up: never tighter than asked
            script += f"{limit} || {fail % ('set ' + name + ' to ' + str(value))}; "
        start = [*(identity.become() if identity else []), *([keyring, "session", "-"] if keyring else [])]
        files = [str(group / "tasks") for group in self.groups.values()]
        return ["/bin/sh", "-c", script + 'exec "$@"', "c2d-step", *files, "--", *start]

    def open_tasks(self) -> list[int]:
        """Write-only descriptors of every group's ``tasks``, for a single-threaded process (not started
        through :meth:`prefix`) to join by writing ``0`` into each; the caller closes them."""
        fds: list[int] = []
        try:
            for group in self.groups.values():
                fds.append(os.open(group / "tasks", os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def pids(self) -> set[int]:
        found: set[int] = set()
        for group in self.groups.values():
            try:
                with open(group / "cgroup.procs", "rb", buffering=0) as procs:
                    found.update(int(pid) for pid in procs.read().split())
            except OSError:
                continue
        return found

    def kill(self, timeout: float = 2.0) -> None:
        """SIGKILL every process in the groups until none is left (a fork bomb keeps forking)."""
        deadline = time.monotonic() + timeout
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def oom_killed(self) -> bool:
        group = self.groups.get("memory")
        if group is None:
            return False
        try:
            for line in (group / "memory.oom_control").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return True
        except OSError:
            return False
        return False

    def peak_memory(self) -> int | None:
        group = self.groups.get("memory")
        try:
            return int((group / "memory.max_usage_in_bytes").read_text()) if group else None
        except OSError:
            return None

    def remove(self) -> None:
        """Delete the groups, killing whatever is still in them first."""
        for group in self.groups.values():
            if not _rmdir(group, attempts=1):  # busy: processes are left (or just exiting)
                self.kill()
                _rmdir(group)
        self.groups.clear()


def _write(path: Path, value: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


@functools.cache
def _has_memsw(parent: Path) -> bool:
    """Whether memory groups have a memory+swap limit here (swap accounting on); the same for every group."""
    return (parent / "memory.memsw.limit_in_bytes").exists()


def _rmdir(group: Path, attempts: int = 50) -> bool:
    """True once the group is gone."""
    for attempt in range(attempts):
        try:
            group.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if attempt + 1 < attempts:
                time.sleep(0.02)
    return False
