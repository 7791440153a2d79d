"""S3-compatible object stores (MinIO, AWS S3) through the ``minio`` SDK, streamed with constant memory.

Errors become the storage errors of :mod:`c2d.exceptions`: missing bucket/key → ObjectNotFoundError,
refused credentials → StorageAccessError, connection trouble and 5xx → TransientStorageError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO, cast
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import MinioException, S3Error

from c2d.exceptions import ObjectNotFoundError, StorageAccessError, StorageError, TransientStorageError
from c2d.storage.locations import S3Location

CHUNK = 1024 * 1024
PART_SIZE = 16 * 1024 * 1024  # multipart uploads: memory per part in flight
NOT_FOUND = frozenset({"NoSuchKey", "NoSuchBucket", "NoSuchObject", "NoSuchUpload"})
DENIED = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AllAccessDisabled"}
)


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # http(s)://host:port
    access_key: str
    secret_key: str
    region: str | None = None


def _translate(exc: Exception, what: str) -> StorageError:
    if isinstance(exc, S3Error):
        if exc.code in NOT_FOUND:
            return ObjectNotFoundError(f"{what}: {exc.code}")
        if exc.code in DENIED:
            return StorageAccessError(f"{what}: the store refused our credentials ({exc.code})")
        status = exc.response.status if exc.response is not None else 0
        if status >= 500 or exc.code in ("SlowDown", "InternalError", "ServiceUnavailable", "RequestTimeout"):
            return TransientStorageError(f"{what}: {exc.code}")
        return StorageError(f"{what}: {exc.code}")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return TransientStorageError(f"{what}: connection failed ({type(exc).__name__})")
    return StorageError(f"{what}: {type(exc).__name__}")


class _Counted:
    """``source`` with a count of the bytes read from it and whether it ran dry (what the SDK reads)."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.read_bytes = 0
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.read_bytes += len(data)
        self.ended = self.ended or (not data and size != 0)
        return data


class S3Store:
    """One endpoint with one set of credentials."""

    def __init__(self, config: S3Config) -> None:
        parts = urlsplit(config.endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise StorageError("the S3 endpoint must be an http(s)://host[:port] URL")
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=60),
            retries=urllib3.Retry(total=3, backoff_factor=0.5, status_forcelist=(500, 502, 503, 504)),
            maxsize=8,
        )
        self.client = Minio(
            parts.netloc,
            access_key=config.access_key,
            secret_key=config.secret_key,
            secure=parts.scheme == "https",
            region=config.region,
            http_client=http,
        )

    def size(self, location: S3Location) -> int:
        try:
            stat = self.client.stat_object(location.bucket, location.key)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _translate(exc, f"object {location.key!r} in bucket {location.bucket!r}") from None
        return int(stat.size or 0)

    def stream(self, location: S3Location, max_bytes: int | None = None) -> Iterator[bytes]:
        """The object's bytes in chunks; at most ``max_bytes`` + 1 are read (the caller enforces the cap)."""
        return self.stream_range(location, 0, max_bytes + 1 if max_bytes is not None else None)

    def stream_range(self, location: S3Location, offset: int, length: int | None) -> Iterator[bytes]:
        """``length`` bytes of the object from ``offset`` (None: to its end) in chunks, by a ranged GetObject;
        nothing is asked of the store before the first chunk is."""
        what = f"object {location.key!r} in bucket {location.bucket!r}"
        if length == 0:
            return  # the SDK reads length 0 as "to the end"
        try:
            response = self.client.get_object(location.bucket, location.key, offset=offset, length=length or 0)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _translate(exc, what) from None
        try:
            yield from response.stream(CHUNK)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientStorageError(f"{what}: transfer interrupted ({type(exc).__name__})") from None
        finally:
            response.close()
            response.release_conn()

    def upload(self, location: S3Location, source: BinaryIO, size: int) -> int:
        """Store ``size`` bytes read from ``source`` (from its current position, never more; multipart above
        PART_SIZE); an interrupted upload leaves no object behind. Returns ``size``. A source that ends before
        ``size`` bytes is a StorageError, not a transient one (it would end early again)."""
        counted = _Counted(source)
        what = f"upload of {location.key!r} to bucket {location.bucket!r}"
        try:
            self.client.put_object(
                location.bucket,
                location.key,
                cast(BinaryIO, counted),
                size,
                part_size=PART_SIZE,
                num_parallel_uploads=1,
            )  # the SDK only calls read()
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            if counted.ended and counted.read_bytes < size:
                raise StorageError(f"{what}: the source ended after {counted.read_bytes} of {size} bytes") from None
            raise _translate(exc, what) from None
        return size

    def ensure_bucket(self, bucket: str) -> None:
        try:
            if not self.client.bucket_exists(bucket):
                self.client.make_bucket(bucket)
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _translate(exc, f"bucket {bucket!r}") from None

    def delete_prefix(self, bucket: str, prefix: str) -> int:
        """Delete every object under ``prefix`` (which must end with "/"); returns how many there were."""
        if not prefix.endswith("/") or prefix == "/":
            raise StorageError("refusing to delete objects outside a job's prefix")
        try:
            names = [obj.object_name for obj in self.client.list_objects(bucket, prefix=prefix, recursive=True)]
            errors = list(self.client.remove_objects(bucket, (DeleteObject(str(name)) for name in names if name)))
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _translate(exc, f"objects under {prefix!r} in bucket {bucket!r}") from None
        if errors:
            raise StorageError(f"{len(errors)} object(s) under {prefix!r} could not be deleted: {errors[0].code}")
        return len(names)

    def presigned_url(self, location: S3Location, seconds: int) -> str:
        try:
            return str(
                self.client.presigned_get_object(location.bucket, location.key, expires=timedelta(seconds=seconds))
            )
        except (MinioException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _translate(exc, f"object {location.key!r}") from None
