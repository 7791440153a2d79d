"""Walking, measuring and removing file trees of any shape, including trees a hostile process built.

A job's algorithm controls the shape of the trees it writes (its outputs, its logs): 10,000 nested
folders, paths far beyond ``PATH_MAX``, millions of names in one folder, symlinks to ``/``, FIFOs,
sparse files. ``os.walk`` recurses (one Python frame per level), builds path strings (``ENAMETOOLONG``
past 4,096 bytes) and follows or opens what it finds by path, where a swap between the check and the
use is possible. Here every folder is opened relative to its parent's file descriptor with
``O_NOFOLLOW | O_DIRECTORY`` (a symlink is never followed, not even one swapped in after the
``lstat``), no path string is ever built, loops replace recursion, and the number of open descriptors
is bounded by the depth cap (:func:`walk`) or constant (:func:`remove_tree`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from c2d.exceptions import C2DError

DEFAULT_MAX_DEPTH = 64
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeError(C2DError):
    """A tree cannot be walked or removed as asked: its root is not a real folder, a mount point or a
    changed folder was found inside it, or the file system refused an operation (no path in the message)."""


@dataclass(frozen=True)
class Entry:
    parent_fd: int  # open O_DIRECTORY fd of the folder holding the entry; valid only until the walk moves on
    name: bytes
    relative: tuple[bytes, ...]  # components from the root, name last
    info: os.stat_result  # lstat of the entry
    depth: int  # 1 for entries directly in the root
    truncated: bool = False  # a folder not entered because depth == max_depth (it has content the walk did not see)


@dataclass(frozen=True)
class Usage:
    bytes: int  # apparent size (st_size) of every non-folder: a sparse file counts at its size
    files: int  # non-folder entries
    depth: int  # deepest level seen; max_depth + 1 when a truncated folder was found


@dataclass
class _Frame:
    fd: int
    relative: tuple[bytes, ...]
    names: Iterator[bytes]


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _listing(fd: int) -> list[bytes]:
    """The names in the folder open at ``fd``, sorted by their bytes (``os.listdir`` of an fd gives str,
    decoded with surrogateescape: ``os.fsencode`` gives the exact bytes back)."""
    return sorted(os.fsencode(name) for name in os.listdir(fd))


def _open_root(root: Path) -> tuple[int, os.stat_result]:
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise TreeError("the tree's root is not a folder (or is a symlink)") from None
        raise TreeError(f"cannot open the tree's root: {exc.strerror}") from None
    return fd, os.fstat(fd)


def walk(
    root: Path,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    on_error: Callable[[tuple[bytes, ...], OSError], None] | None = None,
) -> Iterator[Entry]:
    """Every entry under root (not root itself), depth-first, each folder's entries sorted by name bytes,
    folders yielded before their content. Never follows a symlink (O_NOFOLLOW|O_DIRECTORY opens relative
    to the parent fd), never enters another file system (st_dev differs from root's), never builds a path
    string (works far beyond PATH_MAX), holds at most max_depth + 1 directory fds, no recursion. A folder
    at depth == max_depth is yielded with truncated=True when it is not empty, and not entered. A folder
    that cannot be opened or listed (EACCES, vanished, ...) is reported to on_error (relative, exc) and
    skipped (default: skipped silently). The root itself must be a real folder (not a symlink), else TreeError.

    Also reported to ``on_error``: a folder on another file system (``EXDEV``: yielded, not entered), a
    folder swapped for another between its ``lstat`` and its opening (``ESTALE``), an entry whose
    ``lstat`` fails other than by vanishing (vanished entries are skipped silently). Listing a folder
    briefly duplicates its descriptor (``os.listdir``), so one more fd may be open at that moment.
    Closing the generator early (``break``) closes every descriptor it holds.
    """
    if max_depth < 1:
        raise TreeError("the depth cap must be at least 1")
    report = on_error or (lambda relative, exc: None)
    root_fd, root_info = _open_root(root)
    stack: list[_Frame] = []
    try:
        try:
            stack.append(_Frame(root_fd, (), iter(_listing(root_fd))))
        except OSError as exc:
            os.close(root_fd)
            raise TreeError(f"cannot list the tree's root: {exc.strerror}") from None
        while stack:
            frame = stack[-1]
            name = next(frame.names, None)
            if name is None:
                os.close(stack.pop().fd)
                continue
            relative = (*frame.relative, name)
            try:
                info = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as exc:
                report(relative, exc)
                continue
            depth = len(relative)
            if not stat.S_ISDIR(info.st_mode):
                yield Entry(frame.fd, name, relative, info, depth)
                continue
            if info.st_dev != root_info.st_dev:
                yield Entry(frame.fd, name, relative, info, depth)
                report(relative, OSError(errno.EXDEV, "on another file system"))
                continue
            child = _enter(frame.fd, name, info, relative, report)
            if child is None:
                yield Entry(frame.fd, name, relative, info, depth)
                continue
            if depth >= max_depth:
                try:
                    with os.scandir(child) as entries:
                        truncated = next(entries, None) is not None
                except OSError as exc:
                    truncated = False
                    report(relative, exc)
                finally:
                    os.close(child)
                yield Entry(frame.fd, name, relative, info, depth, truncated)
                continue
            try:
                names = _listing(child)
            except OSError as exc:
                os.close(child)
                report(relative, exc)
                yield Entry(frame.fd, name, relative, info, depth)
                continue
            stack.append(_Frame(child, relative, iter(names)))  # closed by the finally if the caller stops here
            yield Entry(frame.fd, name, relative, info, depth)
    finally:
        for frame in stack:
            os.close(frame.fd)


def _enter(
    parent_fd: int,
    name: bytes,
    info: os.stat_result,
    relative: tuple[bytes, ...],
    report: Callable[[tuple[bytes, ...], OSError], None],
) -> int | None:
    """The folder ``name`` opened relative to ``parent_fd``, if it still is the one ``info`` describes."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            report(relative, exc)
        return None
    if not _same(os.fstat(fd), info):
        os.close(fd)
        report(relative, OSError(errno.ESTALE, "changed while the tree was walked"))
        return None
    return fd


def usage(roots: Iterable[Path], *, max_files: int | None = None, max_depth: int = DEFAULT_MAX_DEPTH) -> Usage:
    """Summed over the roots (missing roots count nothing). Stops early once files > max_files or depth > max_depth
    (the figures are then lower bounds). Meant to run every 0.5 s on a tree a hostile process is changing.

    A root that is not a real folder (a file, a symlink) counts nothing either; folders that vanish or
    cannot be read while they are counted are skipped (their content is not counted).
    """
    total = files = deepest = 0
    for root in roots:
        try:
            for entry in walk(root, max_depth=max_depth):
                deepest = max_depth + 1 if entry.truncated else max(deepest, entry.depth)
                if not stat.S_ISDIR(entry.info.st_mode):
                    files += 1
                    total += entry.info.st_size
                if (max_files is not None and files > max_files) or deepest > max_depth:
                    return Usage(total, files, deepest)  # the walk's descriptors close with its generator
        except TreeError:
            continue  # missing, or not a real folder
    return Usage(total, files, deepest)


@dataclass
class _Level:
    name: bytes  # in its parent
    info: os.stat_result  # fstat when it was entered
    pending: list[bytes] = field(default_factory=list)  # sub-folders still to remove


def _mount_id(fd: int) -> int | None:
    """The mount the fd belongs to (``mnt_id`` in /proc/self/fdinfo); None without /proc."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _open_level(parent_fd: int, name: bytes, dev: int, mount: int | None) -> int:
    """Open the folder ``name`` for removing its content: checked to be on the root's mount first (through
    an O_PATH descriptor: nothing on another mount is touched, not even its mode), then made enterable."""
    probe = os.open(name, _PATH_FLAGS, dir_fd=parent_fd)
    try:
        info = os.fstat(probe)
        if info.st_dev != dev or _mount_id(probe) != mount:
            raise TreeError("a mount point inside the tree: nothing past it was removed")
        if info.st_mode & 0o700 != 0o700:
            try:
                os.chmod(name, 0o700, dir_fd=parent_fd, follow_symlinks=False)
            except (ValueError, NotImplementedError):  # no-follow chmod needs glibc's /proc path: the folder
                os.chmod(name, 0o700, dir_fd=parent_fd)  # was checked just now, and the tree is not changing
        return os.open(".", _DIR_FLAGS, dir_fd=probe)
    finally:
        os.close(probe)


def remove_tree(root: Path) -> None:
    """Remove root and everything under it, any depth, any width, with a constant number of open fds
    (descend with openat; come back up with '..', checking each parent's (st_dev, st_ino) against the one
    recorded on the way down, TreeError on a mismatch), no recursion, never following a symlink, never
    entering another file system (a mount point found inside -> TreeError, nothing past it touched), folders
    without permission made removable (chmod 0o700 via dir_fd) first. Only for trees no process is still
    changing. A missing root is fine (no-op).

    Mount points are found by their mount id (/proc/self/fdinfo), which also catches a bind mount of a
    folder of the same file system; without /proc only ``st_dev`` is compared. A root that is a symlink or
    a file is itself unlinked (never followed). Failures of the file system (EPERM on an immutable file,
    EROFS, ...) become TreeError with the error's text, never a path.
    """
    if not root.name:
        raise TreeError("refusing to remove a file system's root")
    try:
        parent_fd = os.open(root.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise TreeError(f"cannot open the folder holding the tree: {exc.strerror}") from None
    try:
        _remove(parent_fd, os.fsencode(root.name))
    except OSError as exc:
        raise TreeError(f"cannot remove the tree: {exc.strerror}") from None
    finally:
        os.close(parent_fd)


def _remove(parent_fd: int, root_name: bytes) -> None:
    try:
        info = os.stat(root_name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(root_name, dir_fd=parent_fd)
        return
    probe = os.open(root_name, _PATH_FLAGS, dir_fd=parent_fd)
    try:
        mount = _mount_id(probe)
    finally:
        os.close(probe)
    fd = _open_level(parent_fd, root_name, info.st_dev, mount)
    levels = [_Level(root_name, os.fstat(fd))]
    try:
        _empty(fd, levels[-1])
        while True:
            level = levels[-1]
            if level.pending:
                name = level.pending.pop()
                child = _open_level(fd, name, info.st_dev, mount)
                os.close(fd)
                fd = child
                levels.append(_Level(name, os.fstat(fd)))
                _empty(fd, levels[-1])
                continue
            levels.pop()
            if not levels:
                break
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            if not _same(os.fstat(fd), levels[-1].info):
                raise TreeError("a folder of the tree moved while it was removed")
            os.rmdir(level.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(root_name, dir_fd=parent_fd)


def _empty(fd: int, level: _Level) -> None:
    """Unlink every non-folder in the folder open at ``fd``; its sub-folders go to ``level.pending``."""
    for name in os.listdir(fd):
        raw = os.fsencode(name)
        try:
            info = os.stat(raw, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                level.pending.append(raw)
            else:
                os.unlink(raw, dir_fd=fd)
        except FileNotFoundError:
            continue
