"""A job's stored results, wherever its environment put them: the local store, S3 or IPFS.

The result list (``jobs.results``) says where each file is: ``path`` (relative to the job's folder in
the local store), or ``url`` (``s3://<bucket>/<job id>/...``, ``ipfs://<cid>``). Clients never see
those fields; they download through ``computeResult``, which this module serves (stream, local
file, or a short-lived presigned URL when the operator prefers), and results are deleted here when
a job is deleted or its storage expiry passes.

A streamed result (S3, IPFS) honours one byte range, as Starlette's FileResponse does for a local file
(ocean.js resumes a download with ``Range: bytes=<offset>-``): :func:`requested_range` reads the header,
:class:`StreamedResponse` asks the store for those bytes only (a ranged GetObject, Kubo's ``cat`` with
offset and length) and answers 206, or 416 when no byte of the file is in the range.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from c2d.db.job_records import ResultEntry
from c2d.db.jobs import JobRecord
from c2d.exceptions import StorageError
from c2d.settings import Settings
from c2d.storage.ipfs import Kubo
from c2d.storage.locations import LocationError, parse_ipfs, parse_s3, scheme_of
from c2d.storage.s3 import S3Store
from provider.input_files import node_sources


@dataclass(frozen=True)
class LocalResult:
    path: Path


@dataclass(frozen=True)
class StreamedResult:
    """A result in S3 or IPFS: ``read(offset, length)`` streams ``length`` bytes from ``offset`` (None: to the
    end) and asks the store for nothing before its first chunk is read; ``size`` in bytes when known."""

    read: Callable[[int, int | None], Iterator[bytes]]
    size: int | None


@dataclass(frozen=True)
class RedirectResult:
    url: str


Result = LocalResult | StreamedResult | RedirectResult


class ResultStore:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores = node_sources(settings)  # the node's S3 and IPFS clients, made on first use

    def s3(self) -> S3Store:
        return self.stores.s3_store()

    def kubo(self) -> Kubo:
        return self.stores.ipfs()

    def prepare(self) -> None:
        """At start: the stores the environments put results in answer, and the results bucket exists."""
        kinds = {self.settings.result_storage(env) for env in self.settings.environments}
        if "s3" in kinds:
            self.s3().ensure_bucket(self.settings.storage.s3.results_bucket)
        if "ipfs" in kinds:
            self.kubo().version()

    def open(self, job: JobRecord, entry: ResultEntry) -> Result | None:
        """Where to read one result from; None when it is not stored (any more)."""
        url = entry.get("url")
        if not url:
            path = self.settings.store_dir / job.job_id / str(entry.get("path", ""))
            inside = path.resolve().is_relative_to((self.settings.store_dir / job.job_id).resolve())
            return LocalResult(path) if inside and path.is_file() else None
        try:
            if scheme_of(str(url)) == "s3":
                location = parse_s3(str(url))
                s3 = self.settings.storage.s3
                if s3.presign_results:
                    return RedirectResult(self.s3().presigned_url(location, s3.presign_seconds))
                store = self.s3()
                return StreamedResult(partial(store.stream_range, location), store.size(location))
            return StreamedResult(partial(self.kubo().cat_range, parse_ipfs(str(url))), _int(entry.get("filesize")))
        except LocationError as exc:
            raise StorageError(f"result location is not readable: {exc}") from None

    def delete(self, job: JobRecord) -> None:
        """Remove everything stored for ``job`` (idempotent). Raises StorageError when a store refuses."""
        shutil.rmtree(self.settings.store_dir / job.job_id, ignore_errors=True)
        buckets: set[str] = set()
        for entry in job.results or []:
            url = str(entry.get("url") or "")
            if url.startswith("s3://"):
                buckets.add(parse_s3(url).bucket)
            elif url.startswith("ipfs://"):
                self.kubo().unpin(parse_ipfs(url))
        if self.settings.storage.s3.configured:
            buckets.add(self.settings.storage.s3.results_bucket)  # also what a failed publish left behind
        for bucket in sorted(buckets):
            self.s3().delete_prefix(bucket, f"{job.job_id}/")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


# -- byte ranges --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` (inclusive) of a file of ``size`` bytes."""

    start: int
    end: int
    size: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class Unsatisfiable:
    """A range with no byte of a file of ``size`` bytes in it (answered 416)."""

    size: int


_RANGE = re.compile(r"bytes[ \t]*=[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*", re.IGNORECASE)


def requested_range(
    range_header: str | None, if_range: str | None, size: int | None
) -> ByteRange | Unsatisfiable | None:
    """The one byte range a request's ``Range`` header asks of a file of ``size`` bytes (RFC 9110 §14.2).

    None (send the whole file) when there is no header or no known size, when the header is malformed or not in
    bytes (ignored, as the RFC says), when it asks for several ranges (allowed: a server may send the whole) and
    when ``If-Range`` is sent (streamed results have no validator it could match). :class:`Unsatisfiable` when
    the range starts at or past the end, is a zero-length suffix (``bytes=-0``), or the file is empty. A range
    that reaches past the end is cut at it; a suffix longer than the file is the whole file, as a 206."""
    if range_header is None or size is None or if_range is not None:
        return None
    match = _RANGE.fullmatch(range_header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        if not last:
            return None  # "bytes=-"
        suffix = int(last)
        return ByteRange(max(size - suffix, 0), size - 1, size) if suffix and size else Unsatisfiable(size)
    start = int(first)
    if last and int(last) < start:
        return None  # an invalid range-spec: the header is ignored
    if start >= size:
        return Unsatisfiable(size)
    return ByteRange(start, min(int(last), size - 1) if last else size - 1, size)


class StreamedResponse(Response):
    """``result`` downloaded (``application/octet-stream``, with ``headers``): the whole file with its length,
    or the one byte range the request asks (:func:`requested_range`) as a 206 with Content-Range and
    Content-Length, or 416 with ``Content-Range: bytes */<size>`` and an empty body, as FileResponse answers a
    local file. It reads the request's headers when it is sent, as FileResponse does."""

    media_type = "application/octet-stream"

    def __init__(self, result: StreamedResult, headers: Mapping[str, str]) -> None:
        self.result = result
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        asked = Headers(scope=scope)
        size = self.result.size
        chosen = requested_range(asked.get("range"), asked.get("if-range"), size)
        headers = dict(self.headers)
        response: Response
        if isinstance(chosen, Unsatisfiable):
            response = PlainTextResponse("", status_code=416, headers={"Content-Range": f"bytes */{chosen.size}"})
        elif isinstance(chosen, ByteRange):
            headers |= {
                "accept-ranges": "bytes",
                "content-range": f"bytes {chosen.start}-{chosen.end}/{chosen.size}",
                "content-length": str(chosen.length),
            }
            response = StreamingResponse(self.result.read(chosen.start, chosen.length), 206, headers)
        else:
            if size is not None:
                headers |= {"accept-ranges": "bytes", "content-length": str(size)}
            response = StreamingResponse(self.result.read(0, None), 200, headers)
        await response(scope, receive, send)
