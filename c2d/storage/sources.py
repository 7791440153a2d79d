"""Read a file from where an asset says it is: an HTTP(S) URL (SSRF-guarded), an S3 object or an IPFS CID.

A source tells the file's size when it knows it beforehand (so an oversized file is refused before it
is read) and yields its bytes in chunks. Failures are storage errors: TransientStorageError for those
worth retrying (connection lost, HTTP 5xx/429, store unreachable), the others for the rest. Messages
never contain the URL (dataset URLs are the publisher's secret).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from c2d.exceptions import StorageError, TransientStorageError
from c2d.storage.http import HttpClient
from c2d.storage.locations import parse_ipfs, parse_s3, scheme_of
from c2d.storage.netguard import AddressPolicy

if TYPE_CHECKING:  # imported on first use only: the minio SDK and requests cost a step ~0.3 s to start
    from c2d.storage.ipfs import Kubo
    from c2d.storage.s3 import S3Config, S3Store

CHUNK = 1024 * 1024
TIMEOUT = 60.0  # connect, and between bytes


@dataclass(frozen=True)
class SourceConfig:
    allow_hosts: tuple[str, ...] = ()
    s3: S3Config | None = None
    ipfs_api: str | None = None
    ipfs_timeout: float = 60.0


@dataclass
class Opened:
    """An open source: its size if known beforehand, and its bytes."""

    size: int | None
    chunks: Iterator[bytes]
    content_type: str = "application/octet-stream"


@dataclass
class Sources:
    """Opens files; the store clients are made on first use (their libraries imported only then)."""

    config: SourceConfig
    http: HttpClient = field(init=False)
    _s3: S3Store | None = field(default=None, init=False)
    _kubo: Kubo | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.http = HttpClient(AddressPolicy.from_entries(self.config.allow_hosts), TIMEOUT)

    @contextmanager
    def open(
        self, url: str, max_bytes: int, method: str = "GET", headers: dict[str, str] | None = None
    ) -> Iterator[Opened]:
        """``max_bytes``: the reader's cap (stores are asked for no more than one byte over it)."""
        scheme = scheme_of(url)
        if scheme == "s3":
            location = parse_s3(url)
            store = self.s3_store()
            yield Opened(store.size(location), store.stream(location, max_bytes))
        elif scheme == "ipfs":
            yield Opened(None, self.ipfs().cat(parse_ipfs(url), max_bytes))
        else:
            response = self.http.open(url, method, headers or {})
            try:
                if response.status >= 500 or response.status == 429:
                    raise TransientStorageError(f"server answered HTTP {response.status}")
                if response.status >= 400:
                    raise StorageError(f"server answered HTTP {response.status}")
                yield Opened(response.length, response.chunks(CHUNK), response.content_type)
            finally:
                response.close()

    def s3_store(self) -> S3Store:
        if self.config.s3 is None:
            raise StorageError("s3:// files are not enabled on this node (no S3 endpoint or credentials)")
        if self._s3 is None:
            from c2d.storage.s3 import S3Store

            self._s3 = S3Store(self.config.s3)
        return self._s3

    def ipfs(self) -> Kubo:
        if not self.config.ipfs_api:
            raise StorageError("ipfs:// files are not enabled on this node (no IPFS API)")
        if self._kubo is None:
            from c2d.storage.ipfs import Kubo

            self._kubo = Kubo(self.config.ipfs_api, self.config.ipfs_timeout)
        return self._kubo
