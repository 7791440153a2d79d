"""cgroup limits for one sandboxed step, on cgroup v1 or v2 (:mod:`workflows.local.cgroup_layout`): memory
(OOM-kill inside the group, no swap around it), pids, CPU quota.

The step's first process joins its group(s) before it execs anything (see :meth:`StepCgroup.prefix`),
so every descendant is counted and :meth:`StepCgroup.kill` reaches all of them. It joins by writing ``0``
into each group's join file (v1 ``tasks``: that moves the writing thread — all of a single-threaded process —
without the kernel's global lock that writing a pid into ``cgroup.procs`` takes, whose first use after a quiet
while waits for an RCU grace period, ~11 ms of each step's start on this VM; v2 ``cgroup.procs``). Controllers
that cannot be used here (no such controller, no permission, no delegated subtree) are reported in
``missing``; the sandbox then falls back to rlimits (address space) and says so in the job's details.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from workflows.local.cgroup_layout import Layout, detect
from workflows.local.identity import Identity

STALE_AFTER = 600.0  # seconds: a step group empty and this old was left by an engine that was killed
# rlimit -> (sh's ulimit flag, its unit): POSIX counts -c and -f in 512-byte blocks; -v (dash, bash) in KiB
ULIMITS = {"core": ("c", 512), "nofile": ("n", 1), "fsize": ("f", 512), "as": ("v", 1024)}


def prepare_jobs_group(root: Path) -> list[str]:
    """Make the group that holds every step (v2: the delegated subtree, see :mod:`~workflows.local.cgroup_layout`)
    and give it a low CPU weight: when the machine is saturated, the node's own processes (the API, the engine,
    Postgres) still get the CPU they need. Returns the controllers that steps cannot get here (empty: all)."""
    return detect(root).prepare()


def layout_name(root: Path) -> str:
    """``v1`` or ``v2``: the layout the steps' groups are made on."""
    return detect(root).name


def remove_stale_groups(root: Path, min_age: float = STALE_AFTER) -> int:
    """Remove the empty step groups older than ``min_age`` seconds (an engine killed mid-step never
    removed its own); returns how many. A group with a process in it is never removed (the kernel
    refuses), and the age spares a group that an engine on this host has just created for its step."""
    removed = 0
    now = time.time()
    for parent in detect(root).jobs_groups():
        try:
            entries = list(os.scandir(parent))
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
    layout: Layout | None = None  # None only for a step with no groups (``StepCgroup()``: rlimits alone)

    @classmethod
    def create(cls, root: Path, name: str, *, memory: int | None, pids: int | None, cpu: float | None) -> StepCgroup:
        layout = detect(root)
        made = cls(layout=layout)
        wanted = {"memory": memory, "pids": pids, "cpu": cpu}
        for controller, value in wanted.items():
            if value is None:
                continue
            group = layout.step_group(controller, name)
            try:
                group.mkdir(parents=True, exist_ok=True)
                layout.limit(group, controller, float(value))
            except OSError:
                made.missing.append(controller)
                if group not in made.groups.values():  # v2: one group for all; kept while another uses it
                    _rmdir(group)
                continue
            made.groups[controller] = group
        return made

    @property
    def directories(self) -> list[Path]:
        """The step's groups, each once (v2: one group holds every controller)."""
        return list(dict.fromkeys(self.groups.values()))

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
        files = [str(path) for path in self._join_paths()]
        return ["/bin/sh", "-c", script + 'exec "$@"', "c2d-step", *files, "--", *start]

    def open_tasks(self) -> list[int]:
        """Write-only descriptors of every group's join file, for a single-threaded process (not started
        through :meth:`prefix`) to join by writing ``0`` into each; the caller closes them."""
        fds: list[int] = []
        try:
            for path in self._join_paths():
                fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def _join_paths(self) -> list[Path]:
        """The file of each group a process joins by writing its pid (or ``0``) into."""
        layout = self.layout
        return [group / layout.join_file for group in self.directories] if layout is not None else []

    def pids(self) -> set[int]:
        found: set[int] = set()
        for group in self.directories:
            try:
                with open(group / "cgroup.procs", "rb", buffering=0) as procs:
                    found.update(int(pid) for pid in procs.read().split())
            except OSError:
                continue
        return found

    def kill(self, timeout: float = 2.0) -> None:
        """SIGKILL every process in the groups until none is left (a fork bomb keeps forking): at once with
        cgroup v2's ``cgroup.kill``, else one signal per process until the group is empty."""
        deadline = time.monotonic() + timeout
        if self.layout is not None:
            for group in self.directories:
                self.layout.kill_all(group)
        while (pids := self.pids()) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def oom_killed(self) -> bool:
        group = self.groups.get("memory")
        return bool(group and self.layout and self.layout.oom_kills(group) > 0)

    def peak_memory(self) -> int | None:
        group = self.groups.get("memory")
        return self.layout.peak_memory(group) if group and self.layout else None

    def remove(self) -> None:
        """Delete the groups, killing whatever is still in them first."""
        for group in self.directories:
            if not _rmdir(group, attempts=1):  # busy: processes are left (or just exiting)
                self.kill()
                _rmdir(group)
        self.groups.clear()


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
