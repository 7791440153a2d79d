"""The bubblewrap command line of one step.

Every step runs in new user, pid, ipc, uts and cgroup namespaces as uid/gid 65534 with all
capabilities dropped, nested user namespaces disabled, a clean environment (:func:`step_environment`),
a read-only view of the system folders it needs and nothing else of the host. Steps without the
``egress: allowed`` label (the algorithm, filters) also get a new, empty network namespace. Writable
places are exactly the read-write mounts of the template (outputs, logs) and size-capped tmpfs
scratch volumes.
"""

from __future__ import annotations

import functools
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from c2d.settings import RuntimeSettings
from workflows.exceptions import SandboxError
from workflows.local.interpret import Step

NOBODY = 65534
Bind = tuple[Path | None, str, bool, int | None]  # host folder (None: a tmpfs), path inside, read-only, size
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")
ETC_ALWAYS = ("/etc/ld.so.cache", "/etc/localtime", "/etc/alternatives", "/etc/passwd", "/etc/group")
ETC_NETWORK = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/host.conf",
    "/etc/gai.conf",
)


@dataclass(frozen=True)
class Runtime:
    """What an image means locally: host folders to mount read-only (``hide``: folders among them seen
    empty) and the PATH to use; ``python``: the command line that a step's leading ``python`` stands
    for (empty: looked up on PATH)."""

    paths: tuple[Path, ...]
    path_env: str
    env: tuple[tuple[str, str], ...] = ()
    python: tuple[str, ...] = ()
    hide: tuple[Path, ...] = ()


@functools.cache
def steps_runtime(repo_root: Path) -> Runtime:
    """The runtime of this repository's own step programs (the step image): this venv + the code.

    ``python -S`` with the code and the venv's packages on PYTHONPATH: the venv's site processing (its
    editable-install finder) alone costs a step ~40 ms to start, and the steps need neither."""
    paths = (Path(sys.prefix), Path(sys.base_prefix), repo_root)
    packages = dict.fromkeys([str(repo_root), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    return Runtime(
        paths,
        f"{sys.prefix}/bin:{sys.base_prefix}/bin:/usr/bin:/bin",
        (("PYTHONPATH", ":".join(packages)),),
        (sys.executable, "-S"),
    )


def compile_steps(repo_root: Path) -> bool:
    """Write the bytecode of the packages the step programs import, once, where they can be read in the
    sandbox (the checkout is mounted read-only there, so a step could never cache it itself and would
    compile ~15 modules at every start). False when some could not be written (a read-only install)."""
    import compileall

    packages = ("steps", "c2d", "workflows")
    return all(compileall.compile_dir(repo_root / name, quiet=1) for name in packages if (repo_root / name).is_dir())


def resolve_runtime(image: str, runtimes: list[RuntimeSettings]) -> Runtime:
    """The configured runtime with the longest matching image prefix."""
    matches = [r for r in runtimes if image.startswith(r.image_prefix)]
    if not matches:
        known = ", ".join(r.image_prefix for r in runtimes) or "none"
        raise SandboxError(f"image {image!r} has no local runtime (configured prefixes: {known})")
    best = max(matches, key=lambda r: len(r.image_prefix))
    return Runtime(tuple(best.paths), best.path_env, hide=tuple(best.hide))


def _system_binds(egress: bool) -> tuple[list[str], list[str]]:
    """The arguments that give a sandbox the system folders (as the host has them: a folder read-only, or
    the same symlink) and the /etc files it needs; and the folders mounted so."""
    args: list[str] = []
    mounted: list[str] = []
    for path in SYSTEM_DIRS:
        host = Path(path)
        if host.is_symlink():
            args += ["--symlink", str(host.readlink()), path]
        elif host.is_dir():
            args += ["--ro-bind", path, path]
            mounted.append(path)
    for path in ETC_ALWAYS + (ETC_NETWORK if egress else ()):
        args += ["--ro-bind-try", path, path]
    return args, mounted


def bwrap_command(
    bwrap: str,
    step: Step,
    runtime: Runtime,
    binds: list[Bind],
    hidden: tuple[Path, ...] = (),
    *,
    host_pids: bool = False,
) -> list[str]:
    """``binds``: (host folder or None for a tmpfs, path inside, read-only, tmpfs size). ``host_pids``: keep
    the host's pid namespace and mount no /proc (the warm step runner: the engine must reach its
    children by pid; they confine themselves with Landlock, which also scopes their signals)."""
    if host_pids:
        namespaces = ["--unshare-user", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        namespaces += [] if step.egress else ["--unshare-net"]
    else:
        namespaces = ["--unshare-all", "--unshare-user", *(["--share-net"] if step.egress else [])]
    args = [
        bwrap,
        "--die-with-parent",
        "--new-session",
        *namespaces,
        "--uid",
        str(NOBODY),
        "--gid",
        str(NOBODY),
        "--cap-drop",
        "ALL",
        "--disable-userns",
        "--hostname",
        "c2d-job",
    ]
    system_args, system_dirs = _system_binds(step.egress)
    args += system_args
    args += ["--dev", "/dev"] if host_pids else ["--proc", "/proc", "--dev", "/dev"]
    # tmpfs mounts first: a runtime or the checkout may live under /tmp and must stay visible.
    if not any(inside == "/tmp" for _, inside, _, _ in binds):
        args += ["--size", str(64 * 1024**2), "--tmpfs", "/tmp"]
    for host, inside, _, size in binds:
        if host is None:
            args += [*(["--size", str(size)] if size else []), "--tmpfs", inside]
    for path in runtime.paths:  # except what a system folder mounts already (/usr for the distribution's Python)
        if not any(path.is_relative_to(folder) for folder in system_dirs):
            args += ["--ro-bind", str(path), str(path)]
    for path in hidden:  # e.g. the node's data dir inside the repository: secrets, other jobs
        if any(path.is_relative_to(p) for p in runtime.paths) and path.exists():
            args += ["--tmpfs", str(path)]
    for path in runtime.hide:  # e.g. the host interpreter's site-packages
        if path.is_dir():
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
    for host, inside, read_only, _ in binds:
        if host is None:
            continue
        if not host.exists():
            raise SandboxError(f"mount source {host} of {inside} does not exist")
        args += ["--ro-bind" if read_only else "--bind", str(host), inside]
    args += ["--remount-ro", "/"]
    if step.working_dir:
        args += ["--chdir", step.working_dir]
    command = step.command
    if runtime.python and command and command[0] == "python":
        command = [*runtime.python, *command[1:]]
    return [*args, "--", *command]


def step_environment(step: Step, runtime: Runtime) -> dict[str, str]:
    """The whole environment of the sandboxed process (passed to it directly, not on a command line where
    other processes could read secrets from /proc): nothing of the node's own environment."""
    return {"PATH": runtime.path_env, "HOME": "/tmp", "LANG": "C.UTF-8", **dict(runtime.env), **step.env}
