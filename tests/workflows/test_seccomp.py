"""The sandboxes' seccomp filter, on the real kernel: what a filtered process can and cannot do.

Every probe runs in a fresh Python subprocess (installing a filter is irreversible), tries its actions
and prints a JSON dict action -> "ok" or the errno's name; the tests assert the whole dict. Raw syscalls
use x86_64 numbers, so those tests are skipped on other architectures.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from workflows.exceptions import SandboxError
from workflows.local.seccomp import DENIED_EXAMPLES, SeccompError, install, program, program_fd

x86_64_only = pytest.mark.skipif(
    platform.machine() != "x86_64", reason="the probes make raw syscalls with x86_64 syscall numbers"
)

PRELUDE = """
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)

def sc(number, *args):
    result = libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) if isinstance(a, int) else a for a in args))
    if result < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result

def attempt(actions):
    results = {}
    for name, action in actions.items():
        try:
            action()
            results[name] = "ok"
        except Exception as e:
            code = getattr(e, "errno", None)
            results[name] = errno.errorcode[code] if code in errno.errorcode else f"{type(e).__name__}: {e}"
    return results
"""

# x86_64 syscall numbers and the constants the probes use
MATRIX_PROBE = """
import mmap, socket, subprocess, threading
from pathlib import Path
from workflows.local.seccomp import install, program

KEY_SPEC_SESSION_KEYRING, CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = -3, 0x10000000, 0x40000000, 17
tmp = Path(sys.argv[1])
install(program())

def file_io():
    (tmp / "f").write_text("data")
    assert (tmp / "f").read_text() == "data"

def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(7)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 7

def thread():
    ran = []
    worker = threading.Thread(target=lambda: ran.append(1))
    worker.start()  # glibc's pthread_create tries clone3 first, then clone
    worker.join()
    assert ran == [1]

def sock(family, kind=socket.SOCK_STREAM, protocol=0):
    return lambda: socket.socket(family, kind, protocol).close()

def socketpair(family):
    def run():
        for end in socket.socketpair(family):
            end.close()
    return run

def getaddrinfo():  # AI_ADDRCONFIG: glibc asks the kernel for the routes over NETLINK_ROUTE
    assert socket.getaddrinfo("localhost", 80, flags=socket.AI_ADDRCONFIG)

def anonymous_map():
    with mmap.mmap(-1, 4096) as m:
        m[:4] = b"data"

def prctl_no_new_privs():
    if libc.prctl(38, ctypes.c_ulong(1), ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0)) != 0:
        raise OSError(ctypes.get_errno(), "prctl")

def landlock_version():
    assert sc(444, None, 0, 1) >= 1  # landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)

def raw_clone(flags):
    def run():
        pid = sc(56, flags | SIGCHLD, 0, 0, 0, 0)  # fork-like: no CLONE_VM, no new stack
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return run

def setns():
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        sc(308, fd, CLONE_NEWNET)
    finally:
        os.close(fd)

io_uring_params = ctypes.create_string_buffer(120)
perf_attr = ctypes.create_string_buffer(128)
perf_attr[0:8] = (1).to_bytes(4, "little") + (128).to_bytes(4, "little")  # PERF_TYPE_SOFTWARE, size
file_handle = ctypes.create_string_buffer(136)
file_handle[0:8] = (128).to_bytes(4, "little") + (1).to_bytes(4, "little")  # handle_bytes, handle_type
actions = {
    "file_io": file_io,
    "fork": fork,
    "thread": thread,
    "exec": lambda: subprocess.run(["/bin/true"], check=True),
    "socket_inet": sock(socket.AF_INET),
    "socket_inet6": sock(socket.AF_INET6),
    "socket_unix": sock(socket.AF_UNIX),
    "socketpair_unix": socketpair(socket.AF_UNIX),
    "getaddrinfo": getaddrinfo,
    "socket_netlink_route": sock(socket.AF_NETLINK, socket.SOCK_RAW, 0),
    "mmap": anonymous_map,
    "memfd_create": lambda: os.close(os.memfd_create("probe")),
    "pipe": lambda: [os.close(fd) for fd in os.pipe()],
    "prctl_no_new_privs": prctl_no_new_privs,
    "landlock_create_ruleset": landlock_version,
    "personality_query": lambda: sc(135, 0xFFFFFFFF),
    "keyctl": lambda: sc(250, 0, KEY_SPEC_SESSION_KEYRING, 0),  # KEYCTL_GET_KEYRING_ID
    "add_key": lambda: sc(248, b"user", b"probe", b"data", 4, KEY_SPEC_SESSION_KEYRING),
    "request_key": lambda: sc(249, b"user", b"probe-absent", None, 0),
    "socket_vsock": sock(40),
    "socket_packet": sock(socket.AF_PACKET, socket.SOCK_RAW, 0),
    "socket_netlink_audit": sock(socket.AF_NETLINK, socket.SOCK_RAW, 9),
    "socket_netlink_uevent": sock(socket.AF_NETLINK, socket.SOCK_RAW, 15),
    "socket_bluetooth": sock(31),
    "socket_alg": sock(38, socket.SOCK_SEQPACKET),
    "socketpair_inet": socketpair(socket.AF_INET),
    "io_uring_setup": lambda: sc(425, 1, io_uring_params),
    "perf_event_open": lambda: sc(298, perf_attr, 0, -1, -1, 0),
    "userfaultfd": lambda: sc(323, 0),
    "bpf": lambda: sc(321, 0, None, 0),  # BPF_MAP_CREATE without attributes
    "kexec_load": lambda: sc(246, 0, 1000, None, 0x100),  # invalid segment count and flags
    "mount": lambda: sc(165, b"none", b"/nonexistent-probe", b"tmpfs", 0, None),
    "umount2": lambda: sc(166, b"/nonexistent-probe", 0),
    "open_by_handle_at": lambda: sc(304, -100, file_handle, 0),
    "process_vm_readv": lambda: sc(310, os.getpid(), None, 0, None, 0, 0),
    "chroot": lambda: os.chroot("/"),
    "personality_no_randomize": lambda: sc(135, 0x0040000),  # ADDR_NO_RANDOMIZE
    "statmount": lambda: sc(457, None, None, 0, 0),
    "clone3": lambda: sc(435, None, 0),
    "clone_newnet": raw_clone(CLONE_NEWNET),
    "clone_newuser": raw_clone(CLONE_NEWUSER),
    "setns": setns,
    "unshare_newnet": lambda: sc(272, CLONE_NEWNET),
    "unshare_newuser": lambda: sc(272, CLONE_NEWUSER),
    "ptrace_traceme": lambda: sc(101, 0, 0, 0, 0),  # last: a traced probe would stop on its next signal
}
print(json.dumps(attempt(actions)))
"""

ALLOWED = (
    "file_io", "fork", "thread", "exec", "socket_inet", "socket_inet6", "socket_unix", "socketpair_unix",
    "getaddrinfo", "socket_netlink_route", "mmap", "memfd_create", "pipe", "prctl_no_new_privs",
    "landlock_create_ruleset", "personality_query",
)  # fmt: skip
REFUSED = (
    "keyctl", "add_key", "request_key", "socket_vsock", "socket_packet", "socket_netlink_audit",
    "socket_netlink_uevent", "socket_bluetooth", "socket_alg", "socketpair_inet", "io_uring_setup",
    "perf_event_open", "userfaultfd", "bpf", "kexec_load", "mount", "umount2", "open_by_handle_at",
    "process_vm_readv", "chroot", "personality_no_randomize", "clone_newnet", "clone_newuser", "setns",
    "unshare_newnet", "unshare_newuser", "ptrace_traceme",
)  # fmt: skip

# every name of DENIED_EXAMPLES called with all-zero arguments, except where that could change the machine
# if the filter let it through (it runs as root here): those get arguments the kernel rejects
SWEEP_PROBE = """
from workflows.local.seccomp import DENIED_EXAMPLES, install, program

lib = ctypes.CDLL("libseccomp.so.2")
lib.seccomp_syscall_resolve_name.argtypes, lib.seccomp_syscall_resolve_name.restype = [ctypes.c_char_p], ctypes.c_int
numbers = {name: lib.seccomp_syscall_resolve_name(name.encode()) for name in DENIED_EXAMPLES}
unsafe = {"vhangup"}  # no argument to make it harmless
arguments = {
    "kexec_load": (0, 1000, 0, 0x100),  # all zeros would unload the loaded kexec kernel
    "kexec_file_load": (-1, -1, 0, 0, 0x1000),
    "acct": (1,),  # NULL would switch accounting off
    "sethostname": (0, -1),  # length 0 would empty the hostname
    "setdomainname": (0, -1),
}
install(program())
actions = {
    name: (lambda number=number, args=arguments.get(name, (0,) * 6): sc(number, *args))
    for name, number in numbers.items()
    if number >= 0 and name not in unsafe
}
print(json.dumps(attempt(actions)))
"""

FOREIGN_ENTRY_PROBE = """
import mmap
from workflows.local.seccomp import install, program

if sys.argv[1] == "filtered":
    install(program())
if sys.argv[2] == "x32":
    print(libc.syscall(ctypes.c_long(0x40000000 | 39)))  # getpid through the x32 ABI
else:  # mov eax, 20 (i386 getpid); int 0x80; ret
    code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    code.write(bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3]))
    function = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(code)))
    print(function())
"""

THREADS_PROBE = """
import threading
from workflows.local.seccomp import install, program

installed, results = threading.Event(), {}
def later():
    installed.wait()
    results.update(attempt({"keyctl_in_older_thread": lambda: sc(250, 0, -3, 0)}))
older = threading.Thread(target=later)
older.start()
install(program())
installed.set()
older.join()
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
results |= {"no_new_privs": status["NoNewPrivs"].strip(), "seccomp_mode": status["Seccomp"].strip()}
print(json.dumps(results))
"""

SANDBOX_PROBE = """
import socket
actions = {
    "keyctl": lambda: sc(250, 0, -3, 0),
    "socket_inet": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(),
    "socket_vsock": lambda: socket.socket(40, socket.SOCK_STREAM).close(),
}
print(json.dumps(attempt(actions)))
"""

BAD_PROGRAMS_PROBE = """
from workflows.local.seccomp import SeccompError, install

results = {}
for name, bad in ("empty", b""), ("truncated", b"garbage"), ("invalid", b"garbage!"):
    try:
        install(bad)
        results[name] = "installed"
    except SeccompError as e:
        results[name] = str(e)
print(json.dumps(results))
"""


def _probe(body: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = PRELUDE + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal
    )


def _results(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stderr
    results: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    return results


def _libseccomp_knows(name: str) -> bool:
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    return int(lib.seccomp_syscall_resolve_name(name.encode())) >= 0


def test_program_is_built_once_as_whole_bpf_instructions() -> None:
    compiled = program()
    assert compiled is program()
    assert compiled and len(compiled) % 8 == 0 and len(compiled) // 8 <= 4096


@x86_64_only
def test_allowed_and_refused_syscalls(tmp_path: Path) -> None:
    results = _results(_probe(MATRIX_PROBE, str(tmp_path)))
    expected = dict.fromkeys(ALLOWED, "ok") | dict.fromkeys(REFUSED, "EPERM")
    expected["clone3"] = "ENOSYS"  # glibc falls back to clone, whose flags the filter reads
    # newer than libseccomp 2.5.4's table: refused as unknown (ENOSYS); a newer libseccomp names it (EPERM)
    expected["statmount"] = "EPERM" if _libseccomp_knows("statmount") else "ENOSYS"
    assert results == expected


@x86_64_only
def test_every_denied_example_is_refused_whatever_its_arguments() -> None:
    results = _results(_probe(SWEEP_PROBE))
    # all but vhangup and the names libseccomp cannot resolve (2.5.4: listmount, statmount, see the matrix)
    probed = [name for name in DENIED_EXAMPLES if name != "vhangup" and _libseccomp_knows(name)]
    assert len(probed) >= len(DENIED_EXAMPLES) - 3
    assert results == dict.fromkeys(probed, "EPERM")


@x86_64_only
@pytest.mark.parametrize("entry", ["int80", "x32"])
def test_a_foreign_syscall_entry_kills_the_process(entry: str) -> None:
    unfiltered = _probe(FOREIGN_ENTRY_PROBE, "unfiltered", entry)
    if unfiltered.returncode != 0:
        pytest.skip(f"this kernel has no {entry} entry point (the probe died with {unfiltered.returncode})")
    if entry == "int80":
        assert int(unfiltered.stdout) > 0  # the pid: the i386 entry works without the filter
    # (x32 syscalls answer ENOSYS without the filter on kernels built without x32 support, as here)
    filtered = _probe(FOREIGN_ENTRY_PROBE, "filtered", entry)
    assert filtered.returncode == -signal.SIGSYS, filtered


@x86_64_only
def test_install_sets_no_new_privs_and_covers_the_threads_already_running() -> None:
    results = _results(_probe(THREADS_PROBE))
    assert results == {"keyctl_in_older_thread": "EPERM", "no_new_privs": "1", "seccomp_mode": "2"}


def test_bad_programs_are_refused_with_a_clear_message() -> None:
    results = _results(_probe(BAD_PROGRAMS_PROBE))
    assert results == {
        "empty": "not a seccomp program: 0 bytes (1 to 4096 instructions of 8 bytes expected)",
        "truncated": "not a seccomp program: 7 bytes (1 to 4096 instructions of 8 bytes expected)",
        "invalid": "the kernel refused the seccomp filter: Invalid argument",
    }


def test_program_fd_holds_the_program_sealed_at_offset_zero() -> None:
    compiled = program()
    fd = program_fd(compiled)
    try:
        assert os.lseek(fd, 0, os.SEEK_CUR) == 0
        assert os.pread(fd, len(compiled) + 1, 0) == compiled
        assert not os.get_inheritable(fd)  # handed over with pass_fds only
        with pytest.raises(PermissionError):
            os.write(fd, b"\0" * 8)
    finally:
        os.close(fd)


def test_a_seccomp_error_is_a_sandbox_error() -> None:
    assert issubclass(SeccompError, SandboxError)
    with pytest.raises(SeccompError, match=r"^not a seccomp program: 0 bytes"):
        install(b"")  # refused before anything touches this process


def _sandbox(fd: int) -> dict[str, str]:
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    argv = [
        bwrap, "--unshare-all", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL",
        "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--seccomp", str(fd),
        "--", sys.executable, "-S", "-c", PRELUDE + textwrap.dedent(SANDBOX_PROBE),
    ]  # fmt: skip
    done = subprocess.run(
        argv, pass_fds=[fd], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, cwd="/"
    )
    return _results(done)


needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")


@x86_64_only
@needs_bwrap
def test_bubblewrap_loads_the_program() -> None:
    fd = program_fd(program())
    try:
        assert _sandbox(fd) == {"keyctl": "EPERM", "socket_inet": "ok", "socket_vsock": "EPERM"}
    finally:
        os.close(fd)


@x86_64_only
@needs_bwrap
def test_each_sandbox_gets_its_own_fd() -> None:
    compiled = program()
    first, second = program_fd(compiled), program_fd(compiled)
    try:
        assert first != second
        assert _sandbox(first)["keyctl"] == "EPERM"
        assert os.lseek(first, 0, os.SEEK_CUR) == len(compiled)  # bwrap read it to the end: used up
        assert os.lseek(second, 0, os.SEEK_CUR) == 0  # an independent open file, still whole
        assert _sandbox(second)["keyctl"] == "EPERM"
    finally:
        os.close(first)
        os.close(second)
