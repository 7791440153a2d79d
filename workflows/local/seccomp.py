"""A seccomp filter for the job sandboxes: a syscall allowlist, compiled with libseccomp, installed for good.

The local engine hands :func:`program` to bubblewrap on a file descriptor (``bwrap --seccomp FD``, one
fd per sandbox start from :func:`program_fd`): every process of a step's sandbox runs under it. The
node's own step programs (input fetch, output publish) run as forked children of the warm step runner,
which confine themselves with Landlock and then call ``install(program())``.

The policy is modelled on the default seccomp profile of Docker/containerd for a container that holds
NO capabilities (the groups that profile grants only with a capability are not granted):

* allowed: the unconditional allowlist of that profile (files, memory, signals, time, futexes, polling,
  SysV/POSIX IPC, socket calls on already created sockets, credentials calls that the kernel checks
  anyway, scheduling), plus Landlock's three calls and ``seccomp`` itself, which can only restrict;
* ``clone``: allowed only without a namespace flag (CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER,
  NEWPID, NEWNET; CLONE_NEWTIME has no bit of its own in clone's flags, whose low byte is the exit
  signal: only clone3 and unshare could ask for it, and both are refused);
* ``clone3``: fails with ENOSYS (its flags live in memory, where the filter cannot read them, and
  ENOSYS makes glibc fall back to ``clone``);
* ``socket``: AF_UNIX, AF_INET, AF_INET6, and AF_NETLINK with protocol NETLINK_ROUTE only (glibc's
  getaddrinfo with AI_ADDRCONFIG reads the routes through it); ``socketpair``: AF_UNIX only;
* ``personality``: only the values Docker allows (0x0, 0x8, 0x20000, 0x20008, and 0xffffffff, the query);
* every other syscall fails with EPERM: among them keyctl/add_key/request_key, io_uring, perf_event_open,
  userfaultfd, bpf, kexec, the mount family, open_by_handle_at/name_to_handle_at, ptrace and
  process_vm_readv/writev, kcmp, pidfd_getfd, unshare, setns, chroot, the module calls, reboot, swap,
  acct, clock/time setting, quotactl, syslog, iopl/ioperm, fanotify_init, listmount/statmount, the NUMA
  memory-policy calls and modify_ldt;
* syscalls newer than libseccomp's table (numbers above the highest one it knows for this architecture,
  which it cannot name) fail with ENOSYS, as under runc: a program then takes the fallback it has for
  older kernels instead of failing outright;
* a syscall made through another architecture's entry point (``int 0x80`` on x86_64, x32 numbers)
  kills the process.

ptrace is refused entirely (Docker allows it on kernels >= 4.8) on purpose: inside a bubblewrap sandbox,
pid 1 is bwrap's own reaper process, which runs without this filter and can be ptrace-attached by the
sandboxed uid; a tracee's syscalls are not filtered by its tracer's filter, so allowing ptrace would let
an algorithm escape the filter through pid 1. process_vm_readv/writev go with it.

Native architectures: x86_64 and aarch64. Raises :class:`SeccompError` when libseccomp is missing or
refuses the profile, or when the kernel refuses the filter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import functools
import os
import platform

from workflows.exceptions import SandboxError

# libseccomp's public header (include/seccomp.h.in, v2.5.4)
ACT_KILL_PROCESS = 0x80000000
ACT_ALLOW = 0x7FFF0000
FLTATR_ACT_BADARCH = 2
FLTATR_CTL_OPTIMIZE = 8  # 2: a binary tree of syscall numbers, O(log n) per syscall
CMP_EQ, CMP_MASKED_EQ = 4, 7
# the kernel
AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64 = 0xC000003E, 0xC00000B7
_SYS_SECCOMP = {"x86_64": 317, "aarch64": 277}  # by platform.machine()
PR_SET_NO_NEW_PRIVS = 38
KEYCTL_JOIN_SESSION_KEYRING = 1
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
BPF_MAXINSNS = 4096
INSTRUCTION_SIZE = 8  # struct sock_filter
CLONE_NAMESPACES = (
    0x00020000  # CLONE_NEWNS
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)
AF_UNIX, AF_INET, AF_INET6, AF_NETLINK = 1, 2, 10, 16
NETLINK_ROUTE = 0
PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)  # PER_LINUX, PER_LINUX32, UNAME26 (+32), query
NEWER_SYSCALLS_SPAN = 64  # how many numbers above libseccomp's table answer ENOSYS

_ALLOWED = (
    # process lifetime, identity and limits
    "execve", "execveat", "fork", "vfork", "exit", "exit_group", "wait4", "waitid",
    "getpid", "getppid", "gettid", "getpgid", "getpgrp", "getsid", "setpgid", "setsid",
    "kill", "tkill", "tgkill", "pidfd_open", "pidfd_send_signal", "process_mrelease",
    "restart_syscall", "set_tid_address", "set_robust_list", "get_robust_list", "rseq",
    "get_thread_area", "set_thread_area", "prctl", "uname", "sysinfo", "getcpu", "times", "getrusage",
    "getrlimit", "setrlimit", "prlimit64", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
    "umask", "getrandom",
    # self-confinement: these only ever restrict the caller
    "seccomp", "landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
    # credentials (without capabilities the kernel allows only the harmless changes)
    "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid", "getgroups",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "capget", "capset",
    # scheduling
    "sched_yield", "sched_getaffinity", "sched_setaffinity", "sched_getattr", "sched_setattr",
    "sched_getparam", "sched_setparam", "sched_getscheduler", "sched_setscheduler",
    "sched_get_priority_max", "sched_get_priority_min", "sched_rr_get_interval",
    # signals
    "rt_sigaction", "rt_sigpending", "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn",
    "rt_sigsuspend", "rt_sigtimedwait", "rt_tgsigqueueinfo", "sigaltstack", "signalfd", "signalfd4",
    "pause", "alarm",
    # clocks and timers (reading; setting the clock needs CAP_SYS_TIME, adjtimex/clock_adjtime read too)
    "clock_gettime", "clock_getres", "clock_nanosleep", "clock_adjtime", "adjtimex", "gettimeofday",
    "time", "nanosleep", "getitimer", "setitimer", "timer_create", "timer_delete", "timer_getoverrun",
    "timer_gettime", "timer_settime", "timerfd_create", "timerfd_gettime", "timerfd_settime",
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "mincore", "msync", "mlock", "mlock2",
    "mlockall", "munlock", "munlockall", "membarrier", "memfd_create", "memfd_secret",
    "remap_file_pages", "pkey_alloc", "pkey_free", "pkey_mprotect", "map_shadow_stack", "mseal",
    # futexes
    "futex", "futex_waitv", "futex_wait", "futex_wake", "futex_requeue",
    # file descriptors and file I/O
    "open", "openat", "openat2", "creat", "close", "close_range", "read", "write", "readv", "writev",
    "pread64", "pwrite64", "preadv", "pwritev", "preadv2", "pwritev2", "lseek", "dup", "dup2", "dup3",
    "fcntl", "flock", "ioctl", "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "fadvise64",
    "readahead", "fallocate", "ftruncate", "truncate", "sendfile", "splice", "tee", "vmsplice",
    "copy_file_range", "cachestat",
    # file metadata and names
    "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs", "access", "faccessat",
    "faccessat2", "chdir", "fchdir", "getcwd", "mkdir", "mkdirat", "mknod", "mknodat", "rmdir",
    "rename", "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "unlink", "unlinkat",
    "readlink", "readlinkat", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "fchownat",
    "lchown", "utime", "utimes", "utimensat", "futimesat", "getdents", "getdents64",
    # extended attributes
    "getxattr", "lgetxattr", "fgetxattr", "getxattrat", "setxattr", "lsetxattr", "fsetxattr",
    "setxattrat", "listxattr", "llistxattr", "flistxattr", "listxattrat", "removexattr",
    "lremovexattr", "fremovexattr", "removexattrat",
    # waiting for events
    "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "epoll_pwait2", "epoll_ctl_old", "epoll_wait_old", "eventfd", "eventfd2", "pipe",
    "pipe2", "inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
    # asynchronous I/O (the old AIO interface; io_uring is refused)
    "io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents",
    # sockets once created (socket and socketpair: see _CONDITIONAL)
    "accept", "accept4", "bind", "connect", "listen", "getsockname", "getpeername", "getsockopt",
    "setsockopt", "sendto", "sendmsg", "sendmmsg", "recvfrom", "recvmsg", "recvmmsg", "shutdown",
    # System V and POSIX IPC (inside the sandbox's own IPC namespace)
    "msgget", "msgctl", "msgsnd", "msgrcv", "semget", "semctl", "semop", "semtimedop", "shmget",
    "shmat", "shmctl", "shmdt", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
    "mq_getsetattr",
    # the kernel's uretprobe trampoline (kernels >= 6.14 let it through any filter anyway)
    "uretprobe",
    # x86_64 only (names unknown on the native architecture are skipped)
    "arch_prctl",
)  # fmt: skip

# (name, comparisons ANDed together as (argument, operator, datum_a, datum_b)); rules of one name are ORed
_CONDITIONAL: tuple[tuple[str, tuple[tuple[int, int, int, int], ...]], ...] = (
    ("clone", ((0, CMP_MASKED_EQ, CLONE_NAMESPACES, 0),)),  # flags: argument 0 on x86_64 and aarch64
    *(("socket", ((0, CMP_EQ, domain, 0),)) for domain in (AF_UNIX, AF_INET, AF_INET6)),
    ("socket", ((0, CMP_EQ, AF_NETLINK, 0), (2, CMP_EQ, NETLINK_ROUTE, 0))),
    ("socketpair", ((0, CMP_EQ, AF_UNIX, 0),)),
    *(("personality", ((0, CMP_EQ, persona, 0),)) for persona in PERSONALITIES),
)

DENIED_EXAMPLES: tuple[str, ...] = (
    "keyctl", "add_key", "request_key", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "perf_event_open", "userfaultfd", "bpf", "kexec_load", "kexec_file_load", "mount", "umount2",
    "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "pidfd_getfd", "unshare", "setns", "chroot", "init_module", "finit_module", "delete_module", "reboot",
    "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "quotactl", "quotactl_fd", "syslog",
    "iopl", "ioperm", "fanotify_init", "listmount", "statmount", "get_mempolicy", "set_mempolicy",
    "mbind", "migrate_pages", "move_pages", "set_mempolicy_home_node", "sethostname", "setdomainname",
    "modify_ldt", "vhangup", "lookup_dcookie",
)  # fmt: skip
"""Syscalls the filter refuses (EPERM with any arguments, or ENOSYS where newer than libseccomp)."""


class SeccompError(SandboxError):
    """libseccomp is missing or refused the profile, or the kernel refused the filter."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc = ctypes.CDLL(None, use_errno=True)


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0x0000FFFF)


@functools.cache
def _libseccomp() -> ctypes.CDLL:
    name = "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        found = ctypes.util.find_library("seccomp")
        if found is None:
            raise SeccompError("libseccomp is not installed (Debian/Ubuntu package libseccomp2)") from None
        lib = ctypes.CDLL(found)
    lib.seccomp_init.argtypes, lib.seccomp_init.restype = [ctypes.c_uint32], ctypes.c_void_p
    lib.seccomp_release.argtypes, lib.seccomp_release.restype = [ctypes.c_void_p], None
    lib.seccomp_arch_native.argtypes, lib.seccomp_arch_native.restype = [], ctypes.c_uint32
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_attr_set.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p  # a malloc'ed name, or NULL
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_export_bpf.argtypes, lib.seccomp_export_bpf.restype = [ctypes.c_void_p, ctypes.c_int], ctypes.c_int
    return lib


def _check(result: int, what: str) -> None:
    """libseccomp returns 0 or a negated errno value."""
    if result < 0:
        raise SeccompError(f"libseccomp could not {what}: {os.strerror(-result)}")


def _add(lib: ctypes.CDLL, ctx: int, action: int, number: int, name: str, cmps: tuple[tuple[int, ...], ...]) -> None:
    array = (_ArgCmp * max(len(cmps), 1))(*(_ArgCmp(*cmp) for cmp in cmps))
    _check(lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array), f"add the rule for {name}")


def _newest_known(lib: ctypes.CDLL, arch: int) -> int:
    """The highest syscall number libseccomp can name on ``arch``."""
    newest = -1
    for number in range(1024):
        name = lib.seccomp_syscall_resolve_num_arch(arch, number)
        if name:
            _libc.free(ctypes.c_void_p(name))
            newest = number
    return newest


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    try:
        fd = os.memfd_create("seccomp-export", os.MFD_CLOEXEC)
    except OSError as e:
        raise SeccompError(f"could not create a memfd to export the seccomp filter into: {e.strerror}") from None
    try:
        _check(lib.seccomp_export_bpf(ctx, fd), "export the filter")
        return os.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)


@functools.cache
def program(*, join_keyring: bool = False) -> bytes:
    """The compiled filter (an array of struct sock_filter, 8 bytes each) for this machine's native
    architecture, built once per process with libseccomp. A process that confines itself builds it
    before Landlock and forks, so its children install it without loading libseccomp. ``join_keyring``:
    the same filter that also lets ``keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`` through, the warm step
    runner's own, so that each child it forks can join a new, anonymous session keyring before it
    installs the plain filter on top (stacked filters: the stricter answer wins). Raises
    :class:`SeccompError`."""
    lib = _libseccomp()
    arch = lib.seccomp_arch_native()
    if arch not in (AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64):
        raise SeccompError(f"no seccomp profile for this architecture (audit arch {arch:#x})")
    ctx = lib.seccomp_init(_act_errno(errno.EPERM))
    if not ctx:
        raise SeccompError("libseccomp could not create a filter context")
    try:
        _check(lib.seccomp_attr_set(ctx, FLTATR_ACT_BADARCH, ACT_KILL_PROCESS), "make foreign syscalls kill")
        _check(lib.seccomp_attr_set(ctx, FLTATR_CTL_OPTIMIZE, 2), "choose the binary-tree layout")
        rules: list[tuple[int, str, tuple[tuple[int, int, int, int], ...]]] = [
            *((ACT_ALLOW, name, ()) for name in _ALLOWED),
            *((ACT_ALLOW, name, cmps) for name, cmps in _CONDITIONAL),
            (_act_errno(errno.ENOSYS), "clone3", ()),
        ]
        if join_keyring:
            join = ((0, CMP_EQ, KEYCTL_JOIN_SESSION_KEYRING, 0), (1, CMP_EQ, 0, 0))  # an anonymous keyring only
            rules.append((ACT_ALLOW, "keyctl", join))
        for action, name, cmps in rules:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:  # __NR_SCMP_ERROR (unknown name) or a pseudo number (not a syscall here)
                continue
            _add(lib, ctx, action, number, name, cmps)
        newest = _newest_known(lib, arch)
        for number in range(newest + 1, newest + 1 + NEWER_SYSCALLS_SPAN):
            _add(lib, ctx, _act_errno(errno.ENOSYS), number, f"syscall {number}", ())
        compiled = _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)
    if not compiled or len(compiled) % INSTRUCTION_SIZE or len(compiled) > BPF_MAXINSNS * INSTRUCTION_SIZE:
        raise SeccompError(f"libseccomp exported a malformed filter ({len(compiled)} bytes)")
    return compiled


def program_fd(program: bytes) -> int:
    """A new sealed memfd holding ``program``, its offset at 0, for one sandbox start: bwrap reads it to
    EOF, so two sandboxes must never share one. It is close-on-exec (so a sandbox started concurrently by
    another thread cannot inherit it): hand it over with ``subprocess.Popen(pass_fds=[fd])``. The caller
    closes it. Raises :class:`SeccompError`."""
    try:
        fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError as e:
        raise SeccompError(f"could not create a memfd for the seccomp filter: {e.strerror}") from None
    try:
        view = memoryview(program)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError as e:
        os.close(fd)
        raise SeccompError(f"could not fill the seccomp filter's memfd: {e.strerror}") from None
    return fd


def install(program: bytes) -> None:
    """Install ``program`` on the calling process, all its threads included (PR_SET_NO_NEW_PRIVS, then
    seccomp(SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC)). Irreversible; inherited by children.
    Raises :class:`SeccompError`."""
    count, rest = divmod(len(program), INSTRUCTION_SIZE)
    if rest or not 0 < count <= BPF_MAXINSNS:
        raise SeccompError(
            f"not a seccomp program: {len(program)} bytes (1 to {BPF_MAXINSNS} instructions of "
            f"{INSTRUCTION_SIZE} bytes expected)"
        )
    number = _SYS_SECCOMP.get(platform.machine())
    if number is None:
        raise SeccompError(f"no seccomp syscall number known for this architecture ({platform.machine()})")
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(count, ctypes.cast(buffer, ctypes.c_void_p))
    zero = ctypes.c_ulong(0)
    if _libc.prctl(ctypes.c_int(PR_SET_NO_NEW_PRIVS), ctypes.c_ulong(1), zero, zero, zero) != 0:
        raise SeccompError(f"prctl(PR_SET_NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
    result = int(
        _libc.syscall(
            ctypes.c_long(number),
            ctypes.c_ulong(SECCOMP_SET_MODE_FILTER),
            ctypes.c_ulong(SECCOMP_FILTER_FLAG_TSYNC),
            ctypes.byref(fprog),
        )
    )
    if result < 0:
        raise SeccompError(f"the kernel refused the seccomp filter: {os.strerror(ctypes.get_errno())}")
    if result > 0:  # TSYNC: the id of a thread that could not take the filter
        raise SeccompError(f"thread {result} of this process could not take the seccomp filter")
