"""Where a job's uid finds the host folders its sandbox binds: paths it is allowed to walk.

bubblewrap resolves every bind source as the sandbox's own uid (after it switched to it), so each folder
above a source must let that uid pass. The node's data dir must not (it holds the database and its
password), and folders above it often do not either (a home folder, pytest's temporary root). The engine
therefore binds the few folders the sandboxes need (the jobs folder, the results store, a runtime that
lies in such a place) once, at start, under a staging folder that anyone may pass but no one may list:
``/run/c2d-sandboxes/<hash of the data dir>/<n>`` (``$TMPDIR`` where there is no ``/run``). Sandboxes
bind from there; inside, the folders appear at their usual paths. The jobs folder is bound from a shared
mount, so each job's disk, mounted later, appears under the staging bind too. Nothing of a job's own is
reachable that way without its uid: job folders are 0711 and their disks 0700, owned by the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from workflows.exceptions import SandboxError
from workflows.local.jobdisk import mounts, run_tool, unmount


def passable(folder: Path) -> bool:
    """Whether a uid with no right of its own may walk down to ``folder`` and into it (search permission for
    others on ``folder`` and on every folder above it)."""
    current = folder
    while True:
        try:
            if not os.stat(current).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        if current.parent == current:
            return True
        current = current.parent


class Staging:
    """The staging folder of one engine and the folders bound under it (``reach`` maps a path)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.binds: dict[Path, Path] = {}

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> Staging:
        base = Path("/run") if Path("/run").is_dir() else Path(tempfile.gettempdir())
        digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
        return cls(base / "c2d-sandboxes" / digest)

    def stage(self, folders: list[tuple[Path, bool]]) -> None:
        """Bind each (folder, read_only) that a job's uid could not reach under the staging folder. Binds a
        killed engine left there are removed first. SandboxError when a bind fails (the tool's words are in
        the engine log)."""
        self.close()
        self.root.parent.mkdir(mode=0o711, exist_ok=True)
        self.root.mkdir(mode=0o711, exist_ok=True)
        for path in (self.root.parent, self.root):
            os.chmod(path, 0o711)
        if not passable(self.root):
            raise SandboxError("the staging folder of the sandboxes' binds is not passable by their uids")
        for index, (folder, read_only) in enumerate(folders):
            if passable(folder):
                continue
            target = self.root / str(index)
            target.mkdir(mode=0o711, exist_ok=True)
            run_tool(["mount", "--bind", str(folder), str(target)], "staging a folder for the sandboxes")
            self.binds[folder] = target
            if read_only:
                run_tool(["mount", "-o", "remount,bind,ro", str(target)], "staging a folder for the sandboxes")

    def reach(self, path: Path) -> Path:
        """The path a job's uid can use for ``path``."""
        for folder, target in self.binds.items():
            if path.is_relative_to(folder):
                return target / path.relative_to(folder)
        return path

    def close(self) -> None:
        """Undo every bind under the staging folder (this engine's, or a killed one's) and remove it."""
        prefix = str(self.root).rstrip("/") + "/"
        for mount_point in sorted({e.mount_point for e in mounts() if e.mount_point.startswith(prefix)}, key=len):
            if Path(mount_point).parent != self.root:
                continue  # a mount under a staged folder (a job's disk) goes with it
            with contextlib.suppress(SandboxError):  # logged; the next start tries again
                unmount(Path(mount_point))
        self.binds.clear()
        if self.root.is_dir():
            for entry in self.root.iterdir():
                with contextlib.suppress(OSError):
                    entry.rmdir()
            with contextlib.suppress(OSError):
                self.root.rmdir()
