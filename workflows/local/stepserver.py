"""The warm step runner: runs the node's own step programs (input-fetch, output-publish, result-filter)
in forked children of one long-lived, already-initialised interpreter.

Started by the local engine inside its own bubblewrap sandbox (no capabilities, uid 65534, no node
secrets, no /proc; the jobs folder and the results store are its only writable places, hidden data
folder otherwise), one runner per job uid (:mod:`workflows.local.identity`): a runner serves one job at a
time, and its children run as that job's host uid. It never sees a job's data: for each step the engine
asks it to fork a child and gets back the child's pid and the write end of a pipe; the engine writes the
step's instructions into that pipe itself (so no job's URLs or keys ever sit in the memory the next child
is forked from).

Before it serves, it loads the step programs and rehearses them once on a throw-away job of its own
(:mod:`workflows.local.rehearsal`), so that what their first run writes is not copied into every child.

Each child, before it reads anything of the job: starts its own session, sends its errors to the step's
setup channel and joins the step's cgroups (through the descriptors that came with the request), joins a
new, empty session keyring (``--keyring``); once it has its instructions, it confines itself with Landlock
(:mod:`workflows.local.landlock`: read the runtime and system folders, write only its job's folders,
signal or trace nothing outside itself), loads the seccomp filter (``--seccomp``:
:mod:`workflows.local.seccomp`, compiled once by the runner), sets its rlimits, takes the step's
environment, and runs the step program's ``main`` in-process with its output in the step's log. The
engine watches it like any step.

Protocol (SOCK_SEQPACKET, JSON): engine -> ``{"op": "spawn", "id": n, "groups": k}`` with write-only
descriptors of the step's k cgroup ``tasks`` files attached (SCM_RIGHTS), then the step's log and its setup
channel (both append-only); server -> ``{"id": n, "pid": p}`` with the pipe's write end attached, later
``{"id": n, "exit": code}``. EOF on the socket: the engine is gone; the server kills its children and exits.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import resource
import select
import signal
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROGRAMS = ("steps.fetch", "steps.publish", "steps.filter")
# Loaded here once rather than in every child (~5 ms each): Landlock's and seccomp's ctypes, and what the
# programs import only once they run (argparse's help formatter: shutil; host names: encodings.idna).
PRELOAD = ("workflows.local.landlock", "workflows.local.seccomp", "workflows.local.keyring", "shutil", "encodings.idna")
MAX_GROUPS = 8  # cgroup descriptors a spawn request may carry (the engine sends one per controller: 3)
LOG_FDS = 2  # after the groups: the step's log, its setup channel


@dataclass(frozen=True)
class Confinement:
    """What every child does to itself beyond Landlock: ``seccomp``, the filter to load (None: none);
    ``keyring``: join a new session keyring."""

    seccomp: bytes | None
    keyring: bool


def _join(groups: list[int], expected: int) -> str | None:
    """Join the step's cgroups: ``0`` written into a group's ``tasks`` moves the writing thread, all of this
    single-threaded child, without the global lock a ``cgroup.procs`` write waits for. The error, if any."""
    try:
        if len(groups) != expected:
            return f"{expected} cgroup descriptors sent, {len(groups)} received"
        for fd in groups:
            os.write(fd, b"0")
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        for fd in groups:
            os.close(fd)
    return None


def _fail(message: str) -> int:
    sys.stderr.write(f"c2d-step: {message}\n")
    return 125


def _child(request_fd: int, fds: list[int], expected: int, confinement: Confinement) -> int:
    """In the forked child: join the step's cgroups, read the instructions, confine, run the step. Returns
    its exit code. ``fds``: the cgroup descriptors, then the step's log and setup channel."""
    if len(fds) < LOG_FDS:
        return 125
    log, setup = fds[-2], fds[-1]
    os.dup2(setup, 2)  # launch errors go where only the engine reads
    join_error = _join(fds[:-2], expected)  # first: everything the child does from here on is counted
    if join_error is not None:  # nothing of the step runs outside its limits
        return _fail(f"could not join the step's cgroups: {join_error}")
    if confinement.keyring:
        from workflows.local.keyring import join_new_session

        try:
            join_new_session()
        except OSError as exc:
            return _fail(f"could not join a new session keyring: {exc.strerror}")
    with os.fdopen(request_fd, "rb") as pipe:
        raw = pipe.read()
    if not raw:
        return 125  # the engine gave up on this step before sending it
    request: dict[str, Any] = json.loads(raw)
    os.dup2(log, 1)
    os.dup2(log, 2)
    for fd in (log, setup):
        os.close(fd)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.chdir(request["cwd"])
    for name, value in request.get("rlimits", {}).items():
        limit = int(value)
        resource.setrlimit(getattr(resource, f"RLIMIT_{name.upper()}"), (limit, limit))
    os.environ.clear()
    os.environ.update(request["env"])
    tempfile.tempdir = None  # the runner's own, cached by its rehearsal: from here on the step's TMPDIR
    from workflows.local.landlock import confine

    confine([Path(p) for p in request["read_only"]], [Path(p) for p in request["read_write"]])
    if confinement.seccomp is not None:
        from workflows.local.seccomp import install

        install(confinement.seccomp)
    module = request["module"]
    if module not in PROGRAMS:
        sys.stderr.write(f"stepserver: {module!r} is not a step program it runs\n")
        return 2
    sys.argv = [module, *request["argv"]]
    try:
        code = importlib.import_module(module).main(list(request["argv"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the step's own crash: its traceback goes to its log, like a process's would
        traceback.print_exc()
        code = 1
    return int(code or 0)


def serve(sock: socket.socket, confinement: Confinement) -> None:
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (request id, pid)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == sock.fileno():
                data, fds, _, _ = socket.recv_fds(sock, 4096, MAX_GROUPS + LOG_FDS)
                if not data:  # the engine is gone: nothing of ours may outlive it
                    for _, pid in children.values():
                        os.killpg(pid, signal.SIGKILL)
                    return
                spawn = json.loads(data)
                request_id = int(spawn["id"])
                read_end, write_end = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.setsid()
                    sock.close()
                    os.close(write_end)
                    for pidfd in children:
                        os.close(pidfd)
                    os._exit(_child(read_end, fds, int(spawn.get("groups", 0)), confinement))
                for fd in fds:
                    os.close(fd)
                os.close(read_end)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = (request_id, pid)
                poller.register(pidfd, select.POLLIN)
                socket.send_fds(sock, [json.dumps({"id": request_id, "pid": pid}).encode()], [write_end])
                os.close(write_end)
            else:
                request_id, pid = children.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                code = os.waitstatus_to_exitcode(status)
                sock.send(json.dumps({"id": request_id, "exit": code}).encode())


def main() -> int:
    """``python -m workflows.local.stepserver <socket fd> [--seccomp] [--keyring]``."""
    for module in PRELOAD:
        importlib.import_module(module)
    program = None
    if "--seccomp" in sys.argv[2:]:
        from workflows.local.seccomp import SeccompError
        from workflows.local.seccomp import program as compile_program

        try:
            program = compile_program()  # once: every child loads the same
        except SeccompError as exc:
            sys.stderr.write(f"stepserver: cannot build the seccomp filter, not serving: {exc}\n")
            return 2
    confinement = Confinement(program, "--keyring" in sys.argv[2:])
    for module in PROGRAMS:  # the point of the server: every child starts with these loaded, and with each
        importlib.import_module(module).parser()  # program's argument parser built (it is cached)
    from workflows.exceptions import RehearsalError
    from workflows.local.rehearsal import rehearse

    try:
        rehearse()  # what every child's code writes on its first run is written once, here
    except (RehearsalError, OSError) as exc:  # the children are then only slower: serve all the same
        sys.stderr.write(f"stepserver: the rehearsal failed, children start cold: {exc}\n")
    # Nothing allocated so far is ever collected: the collector then never writes to those objects, and
    # the children's copy-on-write pages stay shared.
    gc.freeze()
    sock = socket.socket(fileno=int(sys.argv[1]))
    serve(sock, confinement)
    return 0


if __name__ == "__main__":
    sys.exit(main())
