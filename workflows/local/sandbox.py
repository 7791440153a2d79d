"""The bubblewrap command line of one step.

Every step runs in new user, pid, ipc, uts and cgroup namespaces as uid/gid 65534 with all
capabilities dropped, nested user namespaces disabled, a clean environment (:func:`step_environment`),
a read-only view of the system folders it needs and nothing else of the host. Steps without the
``egress: allowed`` label (the algorithm, filters) also get a new, empty network namespace. Writable
places are exactly the read-write mounts of the template (outputs, logs, /tmp).

The engine starts bubblewrap as the job's own unprivileged host uid (:mod:`workflows.local.identity`), so
uid 65534 inside is that uid outside, never host root. bubblewrap finds the folders it binds as that uid:
where it could not walk to them, they are bound from a staging folder it can walk
(:mod:`workflows.local.staging`). Inside, ``/proc`` is the
sandbox's own with the paths container runtimes hide masked and the ones they protect read-only (runc's
lists; there is no ``/sys`` at all), and a seccomp filter (:mod:`workflows.local.seccomp`) is loaded just
before the step's command runs. bubblewrap's own errors go to its stderr, a channel of the engine's: the
command is started through ``sh -c 'exec 2>&1; exec "$@"'`` so the step's own stderr joins its log
before anything of the step runs, and nothing the step prints can pass for a sandbox error.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import sysconfig
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from c2d.settings import EngineSettings
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
# runc's default lists: files and folders of /proc that a container sees empty, and those it sees read-only
PROC_MASKED = ("acpi", "asound", "interrupts", "kcore", "keys", "latency_stats", "timer_list", "timer_stats",
               "sched_debug", "scsi")  # fmt: skip
PROC_READ_ONLY = ("bus", "fs", "irq", "sys", "sysrq-trigger")
# The step's stderr joins its stdout (the step's log) before its command runs: bubblewrap's own stderr stays
# the engine's channel for sandbox setup errors.
JOIN_STDERR = ("/bin/sh", "-c", 'exec 2>&1; exec "$@"', "c2d-sandbox")


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


@dataclass
class Launch:
    """A bubblewrap command line and the descriptors it names (the seccomp filter): the caller passes them to
    the process (``pass_fds``) and closes them once it has started."""

    argv: list[str]
    fds: list[int] = field(default_factory=list)

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()


def _unchanged(path: Path) -> Path:
    return path


@functools.cache
def _proc_kinds() -> tuple[tuple[str, bool], ...]:
    """(name, is a folder) of the masked /proc paths this kernel has."""
    return tuple((name, os.path.isdir(f"/proc/{name}")) for name in PROC_MASKED if os.path.lexists(f"/proc/{name}"))


def _proc_args() -> list[str]:
    """A new /proc with runc's masked paths empty and its read-only paths read-only."""
    args = ["--proc", "/proc"]
    for name, is_dir in _proc_kinds():
        path = f"/proc/{name}"
        args += ["--tmpfs", path, "--remount-ro", path] if is_dir else ["--ro-bind", "/dev/null", path]
    for name in PROC_READ_ONLY:
        if os.path.lexists(f"/proc/{name}"):
            args += ["--ro-bind", f"/proc/{name}", f"/proc/{name}"]
    return args


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


def resolve_runtime(image: str, engine: EngineSettings) -> Runtime:
    """The runtime of ``image`` (:meth:`EngineSettings.runtime_for`; UnsupportedImageError when none)."""
    best = engine.runtime_for(image)
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
    seccomp_fd: int | None = None,
    reach: Callable[[Path], Path] = _unchanged,
    device_args: Sequence[str] = (),
) -> Launch:
    """``binds``: (host folder or None for a tmpfs, path inside, read-only, tmpfs size). ``host_pids``: keep
    the host's pid namespace and mount no /proc (the warm step runner: the engine must reach its
    children by pid; they confine themselves with Landlock, which also scopes their signals), and start the
    command as it is (the runner's stderr is its log). ``seccomp_fd``: the filter bubblewrap loads
    (:func:`workflows.local.seccomp.program_fd`; it joins the launch's descriptors). ``reach``: where the
    sandbox's uid finds a host folder (:meth:`workflows.local.staging.Staging.reach`). ``device_args``: what
    gives the step its GPUs (:func:`workflows.local.gpu.sandbox_access`), after the new /dev. SandboxError when a
    bound folder is missing; the launch's descriptors are then closed."""
    launch = Launch([], [seccomp_fd] if seccomp_fd is not None else [])
    try:
        launch.argv = _arguments(bwrap, step, runtime, binds, hidden, host_pids, seccomp_fd, reach, device_args)
    except BaseException:
        launch.close()
        raise
    return launch


def _arguments(
    bwrap: str,
    step: Step,
    runtime: Runtime,
    binds: list[Bind],
    hidden: tuple[Path, ...],
    host_pids: bool,
    seccomp_fd: int | None,
    reach: Callable[[Path], Path],
    device_args: Sequence[str] = (),
) -> list[str]:
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
    args += ["--dev", "/dev"] if host_pids else [*_proc_args(), "--dev", "/dev"]
    args += device_args
    # tmpfs mounts and /tmp first: a runtime or the checkout may live under /tmp and must stay visible.
    if not any(inside == "/tmp" for _, inside, _, _ in binds):
        args += ["--size", str(64 * 1024**2), "--tmpfs", "/tmp"]
    for host, inside, _, size in binds:
        if host is None:
            args += [*(["--size", str(size)] if size else []), "--tmpfs", inside]
    args += _bind_args([bind for bind in binds if bind[1] == "/tmp"], reach)
    for path in runtime.paths:  # except what a system folder mounts already (/usr for the distribution's Python)
        if not any(path.is_relative_to(folder) for folder in system_dirs):
            args += ["--ro-bind", str(reach(path)), str(path)]
    for path in hidden:  # e.g. the node's data dir inside the repository: secrets, other jobs
        if any(path.is_relative_to(p) for p in runtime.paths) and path.exists():
            args += ["--tmpfs", str(path)]
    for path in runtime.hide:  # e.g. the host interpreter's site-packages
        if path.is_dir():
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
    args += _bind_args([bind for bind in binds if bind[1] != "/tmp"], reach)
    args += ["--remount-ro", "/"]
    if seccomp_fd is not None:
        args += ["--seccomp", str(seccomp_fd)]
    if step.working_dir:
        args += ["--chdir", step.working_dir]
    command = step.command
    if runtime.python and command and command[0] == "python":
        command = [*runtime.python, *command[1:]]
    return [*args, "--", *([] if host_pids else JOIN_STDERR), *command]


def _bind_args(binds: list[Bind], reach: Callable[[Path], Path]) -> list[str]:
    """bwrap arguments mounting the host folders of ``binds`` (tmpfs entries, host None, are skipped)."""
    args: list[str] = []
    for host, inside, read_only, _ in binds:
        if host is None:
            continue
        if not host.is_dir() or host.is_symlink():
            raise SandboxError(f"the folder mounted on {inside} is missing")
        args += ["--ro-bind" if read_only else "--bind", str(reach(host)), inside]
    return args


# Variables that act on the programs that start the sandbox (the launch shell, the dynamic linker), outside it.
UNSAFE_ENV = re.compile(r"^(LD_.*|BASH_.*|ENV|SHELLOPTS|BASHOPTS|PS4|IFS|GLOBIGNORE|CDPATH)$")


def step_environment(step: Step, runtime: Runtime) -> dict[str, str]:
    """The whole environment of the sandboxed process (passed to it directly, not on a command line where
    other processes could read secrets from /proc): nothing of the node's own environment. SandboxError for a
    step that sets a variable the launch itself would obey (``LD_PRELOAD``, ``BASH_ENV``, ...)."""
    unsafe = sorted(name for name in step.env if UNSAFE_ENV.match(name))
    if unsafe:
        raise SandboxError(f"the step's environment may not set {', '.join(unsafe)}")
    return {"PATH": runtime.path_env, "HOME": "/tmp", "LANG": "C.UTF-8", **dict(runtime.env), **step.env}
