"""A job's stored results, wherever its environment put them: the local store, S3 or IPFS.

The result list (``jobs.results``) says where each file is: ``path`` (relative to the job's folder in
the local store), or ``url`` (``s3://<bucket>/<job id>/...``, ``ipfs://<cid>``). Clients never see
those fields; they download through ``computeResult``, which this module serves (stream, local
file, or a short-lived presigned URL when the operator prefers), and results are deleted here when
a job is deleted or its storage expiry passes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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
    chunks: Iterator[bytes]
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
                return StreamedResult(store.stream(location), store.size(location))
            location_ipfs = parse_ipfs(str(url))
            return StreamedResult(self.kubo().cat(location_ipfs), _int(entry.get("filesize")))
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
