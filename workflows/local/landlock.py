"""Landlock (Linux >= 5.13): a process confines its own file access to a few folders, for good.

The warm step runner forks one child per fetch/publish step; the child calls :func:`confine` before it
touches the job's data, so it can read the runtime and system folders and write only its own job's
folders, whatever the hostile input it handles makes it do. Unprivileged, irreversible, inherited by
every descendant. Raises :class:`LandlockError` when the kernel has no Landlock (the caller falls back
to a fresh sandbox per step).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path

from workflows.exceptions import SandboxError

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # x86_64 and aarch64 alike
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
PR_SET_NO_NEW_PRIVS = 38
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
READ = EXECUTE | READ_FILE | READ_DIR
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1
MIN_ABI = 6  # scoped signals: a confined child cannot kill the node's processes (they share its uid)
# handled rights per ABI version (1: 13 rights; 2: +REFER; 3: +TRUNCATE; 5: +IOCTL_DEV)
_HANDLED = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_ALL_FS = (1 << 16) - 1  # ABI >= 5


class LandlockError(SandboxError):
    """Landlock is not available here, or a rule could not be installed."""


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args: object) -> int:
    result = int(_libc.syscall(number, *args))
    if result < 0:
        errno = ctypes.get_errno()
        raise LandlockError(f"landlock syscall {number} failed: {os.strerror(errno)}")
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI version (0 when Landlock is unavailable)."""
    try:
        return _syscall(SYS_CREATE_RULESET, None, 0, CREATE_RULESET_VERSION)
    except LandlockError:
        return 0


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


def confine(read_only: Iterable[Path], read_write: Iterable[Path]) -> None:
    """From now on this process (and its children) may read only under ``read_only`` + ``read_write``,
    write only under ``read_write``, and signal or ptrace no process outside its own domain (and reach
    no abstract Unix socket outside it). Missing paths are skipped. Needs Landlock ABI >= 6."""
    abi = abi_version()
    if abi < MIN_ABI:
        raise LandlockError(f"this kernel's Landlock (ABI {abi}) cannot scope signals (ABI {MIN_ABI} needed)")
    handled = _HANDLED.get(abi, _ALL_FS)
    attr = _RulesetAttr(handled, 0, SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    ruleset = _syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.sizeof(attr), 0)
    try:
        for paths, rights in ((read_only, READ), (read_write, handled)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    allowed = rights if os.path.isdir(path) else rights & (EXECUTE | READ_FILE | WRITE_FILE)
                    rule = _PathBeneath(allowed & handled, fd)
                    _syscall(SYS_ADD_RULE, ruleset, RULE_PATH_BENEATH, ctypes.byref(rule), 0)
                finally:
                    os.close(fd)
        if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise LandlockError("prctl(PR_SET_NO_NEW_PRIVS) failed")
        _syscall(SYS_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
