"""Host user ids of the sandboxes: every job runs as a host uid of its own, never as host root.

The ids come from a range reserved for the node in ``/etc/subuid`` and ``/etc/subgid`` (a line
``<user>:<first id>:<count>`` in each, made by ``tools/setup_system.sh``; the user is
``C2D_ENGINE__SANDBOX_USER``, ``c2d-jobs`` by default). Registering the range there keeps other tools
that hand out subordinate ids (``useradd``, rootless container runtimes) from ever giving them to
anyone else. A job's every sandboxed process (its steps, and the warm runner that forks its
fetch/publish children) runs as the job's uid and gid; two jobs that run at the same time never share
one, so they cannot signal, trace or share keyrings with each other, and the ids own nothing on the host
outside the job's own disk.

Only an engine that runs as root can switch to these ids. An engine that does not runs every sandbox as
its own uid (never root, since it is not root) and says so in each job's details.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from workflows.exceptions import SandboxError

SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
SETPRIV = "/usr/bin/setpriv"  # util-linux


@dataclass(frozen=True)
class Identity:
    """The host uid and gid a job's sandboxes run as."""

    uid: int
    gid: int

    def become(self) -> list[str]:
        """A command prefix that runs the rest of its command line as this identity (util-linux ``setpriv``:
        this uid and gid, no supplementary groups, no new privileges; capabilities go with the uid)."""
        return [SETPRIV, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--no-new-privs", "--"]


@dataclass(frozen=True)
class IdRange:
    first: int
    count: int


def read_range(table: Path, user: str) -> IdRange | None:
    """The first ``<user>:<first>:<count>`` line of a subordinate id table (None: no such line or file).
    Lines naming the user by numeric id are not considered: the node's range is registered by name."""
    try:
        lines = table.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        name, _, rest = line.strip().partition(":")
        first, _, count = rest.partition(":")
        if name == user and first.isdigit() and count.isdigit():
            return IdRange(int(first), int(count))
    return None


class IdentityPool:
    """Hands out identities from the node's range; at most one job holds an identity at a time."""

    def __init__(self, uids: IdRange, gids: IdRange, needed: int) -> None:
        size = min(uids.count, gids.count)
        if uids.first == 0 or gids.first == 0:
            raise SandboxError("the sandbox id range must not include id 0 (root)")
        if size < needed:
            raise SandboxError(f"the sandbox id range has {size} ids; {needed} jobs may run at once")
        self.uids, self.gids, self.size = uids, gids, size
        self.held: set[int] = set()
        self.lock = threading.Lock()

    @classmethod
    def from_tables(cls, user: str, needed: int) -> IdentityPool:
        """The pool of ``user``'s range; SandboxError naming the fix when it is not registered."""
        uids, gids = read_range(SUBUID, user), read_range(SUBGID, user)
        if uids is None or gids is None:
            raise SandboxError(
                f"no id range for {user!r} in {SUBUID} and {SUBGID}: job sandboxes would run as host root. "
                f"Run tools/setup_system.sh (make setup), or add a line '{user}:<first id>:<count>' to both "
                "files (ids no other user or range has)"
            )
        return cls(uids, gids, needed)

    def acquire(self, preferred: int | None = None) -> Identity:
        """The lowest free identity, or ``preferred`` (a uid of the range) when it is free: a job resumed after
        a restart gets back the uid that owns its files."""
        with self.lock:
            offset = None
            if preferred is not None and 0 <= preferred - self.uids.first < self.size:
                candidate = preferred - self.uids.first
                offset = candidate if candidate not in self.held else None
            if offset is None:
                offset = next((i for i in range(self.size) if i not in self.held), None)
            if offset is None:
                raise SandboxError("every sandbox id is in use")
            self.held.add(offset)
        return Identity(self.uids.first + offset, self.gids.first + offset)

    def release(self, identity: Identity) -> None:
        with self.lock:
            self.held.discard(identity.uid - self.uids.first)


def engine_is_root() -> bool:
    return os.geteuid() == 0
