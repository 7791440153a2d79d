"""Where the local engine makes its step cgroups, on either cgroup layout, and the files that set and read their
limits there.

* **cgroup v1** (legacy and hybrid hosts: memory, pids and cpu each mounted as ``<root>/<controller>``): one
  group per controller, under ``c2d`` below this process's own group of that controller.
* **cgroup v2** (the unified hierarchy only, as current distributions mount it): one group per step holding all
  three controllers, under ``c2d`` in the engine's *delegated subtree*: the group this process was started in
  (a systemd unit with ``Delegate=yes``, a container's own cgroup namespace, or the root of the hierarchy).
  cgroup v2 lets a group hand controllers to its children only while it holds no process itself ("no internal
  processes"), so, unless that group is the hierarchy's true root (a container's cgroup namespace root is not),
  the engine first moves every process of the group into a leaf ``node`` next to ``c2d`` (the group then holds
  only the two), enables the controllers there and in ``c2d``; ``node`` keeps the default CPU weight (100),
  ``c2d`` gets a quarter of it, as v1's ``cpu.shares``.

v2 is used when the unified hierarchy offers the memory controller; a hybrid host whose cgroup2 mount has no
controllers (memory bound to v1) uses v1. Whatever neither gives is reported by the callers as not enforced.
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
JOBS_CPU_SHARES = 256  # v1: all job steps together weigh a quarter of one node process under contention
JOBS_CPU_WEIGHT = 25  # v2: the same quarter of the default weight 100 that the node's own leaf keeps
NODE_LEAF = "node"
JOBS = "c2d"


def _own_groups() -> dict[str, str]:
    """This process's cgroup path by v1 controller name, and ``""`` for its v2 (unified) group, from
    /proc/self/cgroup."""
    groups: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hierarchy, names, path = line.split(":", 2)
        if hierarchy == "0" and names == "":
            groups[""] = path.lstrip("/")
            continue
        for name in names.split(","):
            groups[name] = path.lstrip("/")
    return groups


def _write(path: Path, value: str | int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


@dataclass(frozen=True)
class V1:
    """The v1 layout under ``root`` (the tmpfs with one mount per controller); ``own``: this process's group
    path of each controller (the node's processes never move between v1 groups)."""

    root: Path
    own: dict[str, str]
    name = "v1"
    join_file = "tasks"  # writing 0 moves the writing thread without the kernel's global lock (see cgroups.py)

    def jobs_group(self, controller: str) -> Path:
        return self.root / controller / self.own.get(controller, "") / JOBS

    def jobs_groups(self) -> list[Path]:
        return [self.jobs_group(controller) for controller in CONTROLLERS]

    def prepare(self) -> list[str]:
        """Make the group of all steps under each controller, with a low CPU weight; the controllers that
        steps cannot get here (names)."""
        missing: list[str] = []
        for controller in CONTROLLERS:
            group = self.jobs_group(controller)
            try:
                group.mkdir(parents=True, exist_ok=True)
                if controller == "cpu":
                    _write(group / "cpu.shares", JOBS_CPU_SHARES)
            except OSError:
                missing.append(controller)
        return missing

    def step_group(self, controller: str, name: str) -> Path:
        return self.jobs_group(controller) / name

    def limit(self, group: Path, controller: str, value: float) -> None:
        if controller == "memory":
            _write(group / "memory.limit_in_bytes", int(value))
            if _exists(group.parent / "memory.memsw.limit_in_bytes"):  # swap accounting: no swap around it
                _write(group / "memory.memsw.limit_in_bytes", int(value))
        elif controller == "pids":
            _write(group / "pids.max", int(value))
        else:
            _write(group / "cpu.cfs_period_us", CPU_PERIOD_US)
            _write(group / "cpu.cfs_quota_us", max(1000, int(value * CPU_PERIOD_US)))

    def oom_kills(self, group: Path) -> int:
        return _keyed(group / "memory.oom_control", "oom_kill")

    def peak_memory(self, group: Path) -> int | None:
        try:
            return int((group / "memory.max_usage_in_bytes").read_text())
        except OSError:
            return None

    def kill_all(self, group: Path) -> bool:
        """v1 has no group-wide kill: False, the caller signals each process."""
        return False


@dataclass(frozen=True)
class V2:
    """The v2 layout: ``mount`` is the unified hierarchy, ``base`` the engine's delegated group in it."""

    mount: Path
    base: Path
    name = "v2"
    join_file = "cgroup.procs"  # writing 0 moves the writing process (all of a single-threaded one)

    @property
    def jobs(self) -> Path:
        return self.base / JOBS

    def jobs_group(self, controller: str) -> Path:
        return self.jobs

    def jobs_groups(self) -> list[Path]:
        return [self.jobs]

    def prepare(self) -> list[str]:
        """Make the delegated subtree ready (see the module's docstring): the controllers it cannot give steps."""
        offered = set(_words(self.base / "cgroup.controllers"))
        wanted = [controller for controller in CONTROLLERS if controller in offered]
        try:
            enabled = set(_words(self.base / "cgroup.subtree_control"))
            if not set(wanted) <= enabled:
                if (self.base / "cgroup.type").exists():  # not the hierarchy's root, where processes may stay
                    _vacate(self.base, self.base / NODE_LEAF)
                _write(self.base / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
            self.jobs.mkdir(exist_ok=True)
            if "cpu" in wanted:
                _write(self.jobs / "cpu.weight", JOBS_CPU_WEIGHT)
            _write(self.jobs / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        except OSError:
            return list(CONTROLLERS)
        return [controller for controller in CONTROLLERS if controller not in wanted]

    def step_group(self, controller: str, name: str) -> Path:
        return self.jobs / name

    def limit(self, group: Path, controller: str, value: float) -> None:
        if controller == "memory":
            _write(group / "memory.max", int(value))
            if _exists(group.parent / "memory.swap.max"):  # no swapping around the limit (swap accounting on)
                _write(group / "memory.swap.max", 0)
        elif controller == "pids":
            _write(group / "pids.max", int(value))
        else:
            _write(group / "cpu.max", f"{max(1000, int(value * CPU_PERIOD_US))} {CPU_PERIOD_US}")

    def oom_kills(self, group: Path) -> int:
        return _keyed(group / "memory.events", "oom_kill")

    def peak_memory(self, group: Path) -> int | None:
        try:
            return int((group / "memory.peak").read_text())  # Linux 5.19+
        except (OSError, ValueError):
            return None

    def kill_all(self, group: Path) -> bool:
        """SIGKILL every process of the group at once, forks in flight included (``cgroup.kill``, Linux 5.14+)."""
        try:
            _write(group / "cgroup.kill", 1)
        except OSError:
            return False
        return True


Layout = V1 | V2


@functools.cache
def detect(root: Path) -> Layout:
    """The layout of the cgroup mount ``root`` for this process, found once: v2 where the unified hierarchy
    (``root`` itself, or ``root/unified`` on a hybrid host) offers the memory controller to this process's
    group, v1 otherwise. The v2 delegated group is the one this process was in when first asked (the engine
    moves its processes into a leaf below it, so later reads of /proc/self/cgroup would name the leaf)."""
    own = _own_groups()
    unified = root if (root / "cgroup.controllers").exists() else root / "unified"
    if "" in own and "memory" not in own:
        base = unified / own[""]
        if "memory" in _words(base / "cgroup.controllers"):
            return V2(unified, base)
    return V1(root, {name: path for name, path in own.items() if name})


@functools.cache
def _exists(path: Path) -> bool:
    """Whether a control file of the jobs group exists (the same answer for every step's group: asked once)."""
    return path.exists()


def _words(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except OSError:
        return []


def _keyed(path: Path, key: str) -> int:
    """The value of ``key`` in a flat-keyed cgroup file (``name value`` lines); 0 when unreadable."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        return 0
    return 0


def _vacate(group: Path, leaf: Path, rounds: int = 20) -> None:
    """Move every process of ``group`` into ``leaf`` (made if needed), repeating while new ones appear.
    OSError when the processes cannot be moved (the group is not delegated to this user)."""
    leaf.mkdir(exist_ok=True)
    for _ in range(rounds):
        pids = _words(group / "cgroup.procs")
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # gone meanwhile
                _write(leaf / "cgroup.procs", pid)
    raise OSError(f"processes keep appearing in the engine's cgroup {group.name!r}")
