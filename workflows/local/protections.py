"""What the local engine's sandboxes can enforce on this host, found out once when the engine starts.

Each protection is checked for real (a job file system made and removed, the seccomp filter compiled,
the id range read). A protection this host cannot give is never dropped silently: the engine refuses to
start when the only way left would run sandboxes as host root, and otherwise every job's details list
what its sandbox lacked (``protectionsMissing``), and the engine's log says it at start.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from c2d.settings import EngineSettings
from workflows.exceptions import EngineError, SandboxError
from workflows.local import jobdisk, seccomp
from workflows.local.identity import IdentityPool, engine_is_root

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protections:
    """``pool``: the jobs' own host ids (None: every sandbox runs as the engine's uid); ``seccomp``: the
    compiled filter (None: none loaded); ``keyctl``: the tool that gives each step a new session keyring;
    ``job_disks``: each job gets a file system of its own; ``missing``: what the details of every job say."""

    pool: IdentityPool | None
    seccomp: bytes | None
    keyctl: str | None
    job_disks: bool
    missing: tuple[str, ...]


def detect(engine: EngineSettings, jobs_dir: Path) -> Protections:
    """Check each protection on this host. EngineError when the engine is root but has no id range for the
    sandboxes (they would run as host root)."""
    missing: list[str] = []
    pool = None
    if engine_is_root():
        try:
            pool = IdentityPool.from_tables(engine.sandbox_user, engine.max_parallel_jobs)
        except SandboxError as exc:
            raise EngineError(str(exc)) from None
    else:
        missing.append("a host uid of its own per job (the engine is not root: every job runs as the engine's uid)")
    program = None
    try:
        program = seccomp.program()
    except seccomp.SeccompError as exc:
        missing.append(f"the seccomp filter ({exc})")
    keyctl = shutil.which("keyctl")
    if keyctl is None:
        missing.append("a new session keyring per step (keyctl from keyutils is not installed)")
    reason = jobdisk.probe(jobs_dir)
    if reason is not None:
        missing.append(f"a file system of its own per job ({reason}): disk and file caps are kept by scanning only")
    for line in missing:
        log.warning("job sandboxes on this host lack %s", line)
    return Protections(pool, program, keyctl, reason is None, tuple(missing))
