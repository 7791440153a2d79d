"""Where output-publish stores a job's results: a folder, an S3 prefix or IPFS.

Each target stores one file at a time (``put``) and returns the result-list fields that say where it
went; ``finish`` stores the result list itself, last. A file is either stored whole or not at all
(temporary name + rename; S3 PUT/multipart completion; IPFS add), so an interrupted publish never
leaves a listed result half-written.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Protocol

from c2d.exceptions import StorageError, TransientStorageError
from c2d.storage.locations import LocationError, S3Location, check_bucket, check_key, scheme_of
from steps.common import s3_config
from steps.exceptions import PublishError, TransientPublishError
from workflows.labels import IPFS_API_ENV, S3_ACCESS_KEY_ENV, S3_ENDPOINT_ENV, S3_REGION_ENV, S3_SECRET_KEY_ENV

CHUNK = 1024 * 1024


class Target(Protocol):
    def put(self, source: Path, relative: str) -> dict[str, object]:
        """Store ``source`` as ``relative`` (e.g. ``outputs/x.csv``); the result-list fields of its location."""
        ...

    def finish(self, results: list[dict[str, object]]) -> None:
        """Store the result list (after every file)."""
        ...


def write_json_atomic(path: Path, value: object) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _storage_error(exc: StorageError) -> PublishError:
    return TransientPublishError(str(exc)) if isinstance(exc, TransientStorageError) else PublishError(str(exc))


class FolderTarget:
    """The node's local results store (the local engine) or the shared results volume (Argo)."""

    def __init__(self, folder: Path) -> None:
        if not folder.is_dir():
            raise PublishError(f"results store {folder} is not a folder")
        self.folder = folder

    def put(self, source: Path, relative: str) -> dict[str, object]:
        copy_file(source, self.folder / relative)
        return {"path": relative}

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
        return S3Location(self.bucket, f"{self.prefix}/{relative}")

    def put(self, source: Path, relative: str) -> dict[str, object]:
        location = self._location(relative)
        try:
            self.store.upload(location, _regular(source))
        except StorageError as exc:
            raise _storage_error(exc) from None
        return {"url": location.url}

    def finish(self, results: list[dict[str, object]]) -> None:
        import tempfile  # S3 jobs only

        # a private folder: never a fixed name in a shared /tmp (another publish's, or a planted symlink)
        with tempfile.TemporaryDirectory(prefix="c2d-results-") as folder:
            listing = Path(folder) / "results.json"
            write_json_atomic(listing, results)
            self.put(listing, "results.json")


class IpfsTarget:
    """Each file added (and pinned) on the operator's Kubo node; its CID goes into the result list."""

    def __init__(self) -> None:
        api = os.environ.get(IPFS_API_ENV)
        if not api:
            raise PublishError(f"IPFS results need {IPFS_API_ENV}")
        from c2d.storage.ipfs import Kubo  # only jobs that publish to IPFS pay for importing requests

        self.kubo = Kubo(api)

    def put(self, source: Path, relative: str) -> dict[str, object]:
        try:
            location, _ = self.kubo.add(_regular(source))
        except StorageError as exc:
            raise _storage_error(exc) from None
        return {"url": location.url, "cid": location.cid}

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


def _regular(source: Path) -> Path:
    """``source`` itself, refused if it is (or was swapped for) anything but a regular file."""
    info = os.lstat(source)
    if not stat.S_ISREG(info.st_mode):
        raise PublishError(f"{source.name} is not a regular file")
    return source


def _copy_fd(source: int, dest: int) -> int:
    """Copy in the kernel (copy_file_range: no user-space buffer, reflinks where the filesystem can);
    plain reads and writes where it cannot (another filesystem type, an old kernel)."""
    size = 0
    try:
        while copied := os.copy_file_range(source, dest, 1 << 30):
            size += copied
        return size
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL) or size:
            raise
    while chunk := os.read(source, CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dest, view) :]
        size += len(chunk)
    return size


def copy_file(source: Path, dest: Path) -> int:
    """Copy without following a symlink at ``source``; write under a temporary name, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    size = 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PublishError(f"{source.name} is not a regular file")
        with open(tmp, "wb") as out:
            size = _copy_fd(fd, out.fileno())
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PublishError(f"cannot store {dest.name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return size
