"""Mounting and unmounting through util-linux's libmount, in-process.

Every job mounts its own file system (a loop device) and unmounts it at its end. Through ``mount(8)`` and
``umount(8)`` that was two processes per job (3.4 and 2.3 ms of CPU here, and a fork of the engine each);
through the same library those tools are built on, 0.8 and 0.3 ms. libmount sets up and releases the
loop device itself (``loop`` option, autoclear), as the tools do.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from workflows.exceptions import SandboxError

log = logging.getLogger(__name__)


@functools.cache
def _library() -> ctypes.CDLL:
    name = ctypes.util.find_library("mount") or "libmount.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SandboxError(f"libmount (util-linux) cannot be loaded: {exc}") from None
    lib.mnt_new_context.restype = ctypes.c_void_p
    lib.mnt_free_context.argtypes = [ctypes.c_void_p]
    for setter in ("mnt_context_set_source", "mnt_context_set_target", "mnt_context_set_fstype"):
        getattr(lib, setter).argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.mnt_context_set_options.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.mnt_context_enable_lazy.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.mnt_context_mount.argtypes = [ctypes.c_void_p]
    lib.mnt_context_umount.argtypes = [ctypes.c_void_p]
    lib.mnt_context_get_excode.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    return lib


@contextlib.contextmanager
def _context(what: str) -> Iterator[tuple[ctypes.CDLL, int]]:
    lib = _library()
    context = lib.mnt_new_context()
    if not context:
        raise SandboxError(f"{what}: libmount could not make a context")
    try:
        yield lib, context
    finally:
        lib.mnt_free_context(context)


def _check(lib: ctypes.CDLL, context: int, code: int, what: str, quiet: bool = False) -> None:
    if code != 0:
        message = ctypes.create_string_buffer(1024)
        lib.mnt_context_get_excode(context, code, message, len(message))
        if not quiet:  # its words name host paths: the engine log only
            log.error("%s: %s", what, message.value.decode(errors="replace") or os.strerror(abs(code)))
        raise SandboxError(f"{what} failed")


def mount(source: Path, target: Path, fstype: str, options: str) -> None:
    """``mount -t fstype -o options source target`` (``loop`` in the options: on a loop device of its own,
    released when it is unmounted). SandboxError when it fails (the reason in the engine log)."""
    with _context("mounting") as (lib, context):
        lib.mnt_context_set_source(context, str(source).encode())
        lib.mnt_context_set_target(context, str(target).encode())
        lib.mnt_context_set_fstype(context, fstype.encode())
        lib.mnt_context_set_options(context, options.encode())
        _check(lib, context, lib.mnt_context_mount(context), "mounting")


def unmount(target: Path, *, lazy: bool = False, quiet: bool = False) -> None:
    """``umount [--lazy] target``. SandboxError when it fails (the reason in the engine log, unless ``quiet``)."""
    with _context("unmounting") as (lib, context):
        lib.mnt_context_set_target(context, str(target).encode())
        if lazy:
            lib.mnt_context_enable_lazy(context, 1)
        _check(lib, context, lib.mnt_context_umount(context), "unmounting", quiet)
