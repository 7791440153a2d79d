"""The kernel's session keyring: a step must not inherit the one of the process that started it.

Every process inherits its parent's session keyring, and keys in it are *possessed*: whoever holds the
keyring may read them, whatever their owner. A step that inherited the node's would reach the node's keys
and whatever an earlier step added there. Each step therefore joins a new, empty, anonymous session
keyring before it runs anything of the job: sandboxes through ``keyctl session -`` (keyutils) in their
launch prefix, warm children by :func:`join_new_session`. The seccomp filter then refuses the key system
calls altogether.
"""

from __future__ import annotations

import ctypes
import os

SYS_KEYCTL = 250 if os.uname().machine == "x86_64" else 219  # x86_64; aarch64 (generic table)
KEYCTL_JOIN_SESSION_KEYRING = 1

_libc = ctypes.CDLL(None, use_errno=True)


def join_new_session() -> int:
    """Make this process (and its later children) join a new anonymous session keyring; its serial number.
    OSError when the kernel refuses (no key support, key quota reached)."""
    serial = int(_libc.syscall(SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None))
    if serial < 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return serial
