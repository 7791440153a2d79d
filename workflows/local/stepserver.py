"""The warm step runner: runs the node's own step programs (input-fetch, output-publish, result-filter)
in forked children of one long-lived, already-initialised interpreter.

Started once by the local engine inside its own bubblewrap sandbox (no capabilities, uid 65534, no
node secrets, no /proc; the jobs folder and the results store are its only writable places, hidden data
folder otherwise). It never sees a job's data: for each step the engine asks it to fork a child and
gets back the child's pid and the write end of a pipe; the engine writes the step's instructions into
that pipe itself (so no job's URLs or keys ever sit in the memory the next child is forked from).

Before it serves, it loads the step programs and rehearses them once on a throw-away job of its own
(:mod:`workflows.local.rehearsal`), so that what their first run writes is not copied into every child.

Each child, before it reads anything of the job: starts its own session and joins the step's cgroups
(through the descriptors that came with the request); once it has its instructions, it confines itself
with Landlock (:mod:`workflows.local.landlock`: read the runtime and system folders, write only its
job's folders, signal or trace nothing outside itself), sets its rlimits, takes the step's environment,
and runs the step program's ``main`` in-process. The engine watches it like any step.

Protocol (SOCK_SEQPACKET, JSON): engine -> ``{"op": "spawn", "id": n, "groups": k}`` with write-only
descriptors of the step's k cgroup ``tasks`` files attached (SCM_RIGHTS); server -> ``{"id": n, "pid": p}``
with the pipe's write end attached, later ``{"id": n, "exit": code}``. EOF on the socket: the engine is
gone; the server kills its children and exits.
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
from pathlib import Path
from typing import Any

PROGRAMS = ("steps.fetch", "steps.publish", "steps.filter")
# Loaded here once rather than in every child (~5 ms each): Landlock's ctypes, and what the programs
# import only once they run (argparse's help formatter: shutil; host names: encodings.idna).
PRELOAD = ("workflows.local.landlock", "shutil", "encodings.idna")
MAX_GROUPS = 8  # cgroup descriptors a spawn request may carry (the engine sends one per controller: 3)


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


def _child(request_fd: int, groups: list[int], expected: int) -> int:
    """In the forked child: join the step's cgroups, read the instructions, confine, run the step. Returns
    its exit code."""
    join_error = _join(groups, expected)  # first: everything the child does from here on is counted
    with os.fdopen(request_fd, "rb") as pipe:
        raw = pipe.read()
    if not raw:
        return 125  # the engine gave up on this step before sending it
    request: dict[str, Any] = json.loads(raw)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    if join_error is not None:  # nothing of the step runs outside its limits
        sys.stderr.write(f"c2d-step: could not join the step's cgroups: {join_error}\n")
        return 125
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


def serve(sock: socket.socket) -> None:
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (request id, pid)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == sock.fileno():
                data, groups, _, _ = socket.recv_fds(sock, 4096, MAX_GROUPS)
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
                    os._exit(_child(read_end, groups, int(spawn.get("groups", 0))))
                for fd in groups:
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
    for module in PRELOAD:
        importlib.import_module(module)
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
    serve(sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
