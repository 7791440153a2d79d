"""Stream one file from its source to disk with constant memory, a byte cap and a checksum check.

Messages never contain the URL: dataset URLs are the publisher's secret and logs go to the consumer.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from c2d.exceptions import StorageError, TransientStorageError
from c2d.storage.locations import LocationError
from c2d.storage.sources import SourceConfig, Sources
from steps.common import retrying, s3_config
from steps.exceptions import FetchError, TransientFetchError
from steps.fetch_plan import Access, FileToFetch


def sources_for(access: Access) -> Sources:
    """The fetch step's sources: endpoints from the spec, S3 keys from the environment (the node's Secret)."""
    s3 = s3_config(access.s3_endpoint, access.s3_region)
    return Sources(SourceConfig(tuple(access.allow_hosts), s3, access.ipfs_api, access.ipfs_timeout))


@dataclass(frozen=True)
class Fetched:
    size: int
    sha256: str


class _Hasher:
    """sha256 of a download. The first chunk is hashed inline (a file of one chunk, the common small case,
    never starts a thread); from the second on, on another thread (hashlib releases the GIL), so hashing
    overlaps the network and the disk; at most QUEUED chunks wait, so memory stays flat."""

    QUEUED = 4

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.chunks: queue.Queue[bytes | None] = queue.Queue(self.QUEUED)
        self.thread: threading.Thread | None = None
        self.first = True

    def _run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            self.digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self.first:  # no thread yet: nothing queued can come before this chunk
            self.first = False
            self.digest.update(chunk)
            return
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        self.chunks.put(chunk)

    def hexdigest(self) -> str:
        if self.thread is not None:
            self.chunks.put(None)
            self.thread.join()
        return self.digest.hexdigest()


def _attempt(sources: Sources, file: FileToFetch, dest: Path, budget: int) -> Fetched:
    hasher = _Hasher()
    size = 0
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        try:
            with _translated(), sources.open(file.url, budget, file.method, file.headers) as opened:
                if opened.size is not None and opened.size > budget:
                    raise FetchError(f"file is {opened.size} bytes, over the {budget} bytes left for inputs")
                with open(tmp, "wb") as out:
                    for chunk in opened.chunks:
                        size += len(chunk)
                        if size > budget:
                            raise FetchError(f"file exceeds the {budget} bytes left for inputs")
                        hasher.update(chunk)
                        out.write(chunk)
        finally:
            sha256 = hasher.hexdigest()
        if file.size is not None and file.size != size:
            raise FetchError(f"got {size} bytes, the publisher declared {file.size}")
        if file.checksum is not None and file.checksum != sha256:
            raise FetchError(f"sha256 {sha256} does not match the declared checksum {file.checksum}")
    except TransientFetchError as exc:
        tmp.unlink(missing_ok=True)
        raise TransientFetchError(f"{exc} after {size} bytes" if size else str(exc)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return Fetched(size, sha256)


@contextmanager
def _translated() -> Iterator[None]:
    """Storage errors as fetch errors (transient ones are retried)."""
    try:
        yield
    except TransientStorageError as exc:
        raise TransientFetchError(str(exc)) from None
    except (StorageError, LocationError) as exc:
        raise FetchError(str(exc)) from None


def fetch_file(sources: Sources, file: FileToFetch, dest: Path, budget: int, log: logging.Logger) -> Fetched:
    """Fetch, retrying transient errors."""
    return retrying(lambda: _attempt(sources, file, dest, budget), TransientFetchError, log, "fetch")
