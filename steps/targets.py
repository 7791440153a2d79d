"""Where output-publish stores a job's results: a folder, an S3 prefix or IPFS.

Each target stores one file at a time (``put``) and returns the result-list fields that say where it
went; ``finish`` stores the result list itself, last. A file is either stored whole or not at all
(temporary name + rename; S3 PUT/multipart completion; IPFS add), so an interrupted publish never
leaves a listed result half-written.

Errors of ``put``: :class:`ItemRefusedError` when the store refused this one file for a reason of its own
(its name, its size, a non-transient error about that object: the caller skips it and goes on);
``TransientPublishError`` when the store may take it later; ``PublishError`` when the store itself is
unusable (full, read-only, credentials refused). No message holds a host path: files are named by their
name in the store (``outputs/<name>``), rendered with :func:`steps.common.safe_name`.
"""

from __future__ import annotations

import errno
import functools
import io
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from c2d.exceptions import ObjectNotFoundError, StorageAccessError, StorageError, TransientStorageError
from c2d.storage.locations import LocationError, S3Location, check_bucket, check_key, scheme_of
from steps.common import s3_config, safe_name
from steps.contract import IPFS_API_ENV, S3_ACCESS_KEY_ENV, S3_ENDPOINT_ENV, S3_REGION_ENV, S3_SECRET_KEY_ENV
from steps.exceptions import PublishError, TransientPublishError

CHUNK = 1024 * 1024
# A file's own problem in a folder store: its name (too long, not storable, in the way of a folder or under
# a file), its size (EFBIG), a sub-folder it cannot go into. Anything else (ENOSPC, EIO, EROFS) is the store's.
ITEM_ERRNOS = frozenset(
    {
        errno.ENAMETOOLONG,
        errno.EFBIG,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EEXIST,
        errno.ENOTEMPTY,
        errno.EACCES,
        errno.EPERM,
        errno.EILSEQ,
        errno.EINVAL,
    }
)


class ItemRefusedError(PublishError):
    """The store refused one file for a reason of its own; publishing goes on without it."""


@dataclass(frozen=True)
class Source:
    """An open regular file to store: its first ``size`` bytes (the size checked when it was opened), read
    by offset (``pread``), so that the file position does not matter and a retry starts over. A file that
    grew since is cut at ``size``; one that shrank gives fewer bytes (a folder store keeps what was read,
    S3 refuses the object)."""

    fd: int
    size: int

    def reader(self) -> BinaryIO:
        """A fresh binary reader of the ``size`` bytes from offset 0 (the fd stays the caller's)."""
        return io.BufferedReader(_SourceReader(self), CHUNK)


class _SourceReader(io.RawIOBase):
    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self.source.size - self.offset)
        if want <= 0:
            return 0
        chunk = os.pread(self.source.fd, want, self.offset)
        buffer[: len(chunk)] = chunk
        self.offset += len(chunk)
        return len(chunk)


class Target(Protocol):
    def put(self, source: Source, relative: str) -> tuple[dict[str, object], int]:
        """Store ``source`` as ``relative`` (e.g. ``outputs/x.csv``); the result-list fields of its location
        and the bytes stored."""
        ...

    def finish(self, results: list[dict[str, object]]) -> None:
        """Store the result list (after every file)."""
        ...


def write_json_atomic(path: Path, value: object) -> None:
    """Write ``value`` as JSON to ``path`` whole or not at all: a fresh temporary name of its own in the same
    folder (``.c2d-<16 hex>.part``, never an existing file's), then a rename. PublishError on failure."""
    try:
        _write_atomic(path, json.dumps(value, indent=1).encode("utf-8"))
    except OSError as exc:
        raise PublishError(f"cannot write the result list: {exc.strerror}") from None


def _temporary(folder: Path) -> tuple[Path, int]:
    """A new file in ``folder`` under a random name no output can have claimed (O_EXCL)."""
    tmp = folder / f".c2d-{secrets.token_hex(8)}.part"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return tmp, os.open(tmp, flags, 0o644)


def _replace_with(dest: Path, write: Callable[[int], int]) -> int:
    """``write(fd)`` into a temporary file of its own in ``dest``'s folder, synced, then renamed onto ``dest``:
    ``dest`` is whole or absent. What ``write`` returned; OSError on failure (the temporary file removed)."""
    tmp, fd = _temporary(dest.parent)
    try:
        try:
            written = write(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


def _write_all(fd: int, body: bytes) -> int:
    view = memoryview(body)
    while view:
        view = view[os.write(fd, view) :]
    return len(body)


def _write_atomic(path: Path, body: bytes) -> None:
    _replace_with(path, functools.partial(_write_all, body=body))


def _storage_error(exc: StorageError, relative: str | None = None) -> PublishError:
    """A store's error about ``relative`` (None: the result list) as the error the publisher acts on."""
    if isinstance(exc, TransientStorageError):
        return TransientPublishError(str(exc))
    if relative is None or isinstance(exc, StorageAccessError | ObjectNotFoundError):  # the store, not the file
        return PublishError(str(exc))
    return ItemRefusedError(f"cannot store {safe_name(relative)}: {exc}")


class FolderTarget:
    """The node's local results store (the local engine) or the shared results volume (Argo)."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise PublishError("the results store is not a folder")
        self.folder = folder

    def put(self, source: Source, relative: str) -> tuple[dict[str, object], int]:
        dest = self.folder / relative
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            stored = copy_file(source, dest)
        except OSError as exc:
            error = ItemRefusedError if exc.errno in ITEM_ERRNOS else PublishError
            raise error(f"cannot store {safe_name(relative)}: {exc.strerror}") from None
        return {"path": relative}, stored

    def finish(self, results: list[dict[str, object]]) -> None:
        write_json_atomic(self.folder / "results.json", results)


class S3Target:
    """``s3://<bucket>/<job prefix>``: one prefix per job in the operator's results bucket."""

    def __init__(self, url: str) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        try:
            self.bucket, self.prefix = check_bucket(bucket), check_key(prefix.strip("/"))
        except LocationError as exc:
            raise PublishError(f"invalid results location: {exc}") from None
        config = s3_config(os.environ.get(S3_ENDPOINT_ENV), os.environ.get(S3_REGION_ENV))
        if config is None:
            raise PublishError(f"S3 results need {S3_ENDPOINT_ENV}, {S3_ACCESS_KEY_ENV} and {S3_SECRET_KEY_ENV}")
        from c2d.storage.s3 import S3Store

        self.store = S3Store(config)

    def _location(self, relative: str) -> S3Location:
        try:
            return S3Location(self.bucket, check_key(f"{self.prefix}/{relative}"))
        except LocationError as exc:
            raise ItemRefusedError(f"cannot store {safe_name(relative)}: {exc}") from None

    def put(self, source: Source, relative: str) -> tuple[dict[str, object], int]:
        location = self._location(relative)
        try:
            stored = self.store.upload(location, source.reader(), source.size)
        except StorageError as exc:
            raise _storage_error(exc, relative) from None
        return {"url": location.url}, stored

    def finish(self, results: list[dict[str, object]]) -> None:
        body = json.dumps(results, indent=1).encode("utf-8")  # from memory: no temporary file anywhere
        try:
            self.store.upload(self._location("results.json"), io.BytesIO(body), len(body))
        except StorageError as exc:
            raise _storage_error(exc) from None


class IpfsTarget:
    """Each file added (and pinned) on the operator's Kubo node; its CID goes into the result list."""

    def __init__(self) -> None:
        api = os.environ.get(IPFS_API_ENV)
        if not api:
            raise PublishError(f"IPFS results need {IPFS_API_ENV}")
        from c2d.storage.ipfs import Kubo  # only jobs that publish to IPFS pay for importing requests

        self.kubo = Kubo(api)

    def put(self, source: Source, relative: str) -> tuple[dict[str, object], int]:
        try:
            location, stored = self.kubo.add(source.reader())
        except StorageError as exc:
            raise _storage_error(exc, relative) from None
        return {"url": location.url, "cid": location.cid}, stored

    def finish(self, results: list[dict[str, object]]) -> None:
        """Nothing to store: the CIDs are in the result list the engine records."""


def open_target(target: str) -> Target:
    if target == "ipfs":
        return IpfsTarget()
    if "://" in target:
        if scheme_of(target) != "s3":
            raise PublishError("results go to a folder, s3://<bucket>/<prefix> or ipfs")
        return S3Target(target)
    return FolderTarget(Path(target))


def _copy_fd(source: Source, dest: int) -> int:
    """Copy ``source.size`` bytes at most, from offset 0, in the kernel (copy_file_range: no user-space buffer,
    reflinks where the filesystem can); plain reads and writes where it cannot (another filesystem type, an
    old kernel). The bytes copied: fewer when the file shrank meanwhile."""
    done = 0
    try:
        while done < source.size and (copied := os.copy_file_range(source.fd, dest, source.size - done, done)):
            done += copied
        return done
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL) or done:
            raise
    while done < source.size and (chunk := os.pread(source.fd, min(CHUNK, source.size - done), done)):
        done += _write_all(dest, chunk)
    return done


def copy_file(source: Source, dest: Path) -> int:
    """Copy ``source`` to ``dest`` under a temporary name of its own in ``dest``'s folder, synced, then
    renamed: ``dest`` is whole or absent. OSError on failure (the temporary file removed)."""
    return _replace_with(dest, functools.partial(_copy_fd, source))
