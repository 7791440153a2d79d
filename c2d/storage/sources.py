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

import requests

from c2d.exceptions import StorageError, TransientStorageError
from c2d.storage.ipfs import Kubo
from c2d.storage.locations import parse_ipfs, parse_s3, scheme_of
from c2d.storage.netguard import AddressPolicy, guarded_session

if TYPE_CHECKING:  # the minio SDK is imported only by jobs that read S3 (it costs a step ~0.3 s to start)
    from c2d.storage.s3 import S3Config, S3Store

CHUNK = 1024 * 1024
TIMEOUT = (10.0, 60.0)  # connect, read (between bytes)


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
    """Opens files; the store clients are made on first use."""

    config: SourceConfig
    http: requests.Session = field(init=False)
    _s3: S3Store | None = field(default=None, init=False)
    _kubo: Kubo | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.http = guarded_session(AddressPolicy.from_entries(self.config.allow_hosts))

    @contextmanager
    def open(
        self, url: str, max_bytes: int, method: str = "GET", headers: dict[str, str] | None = None
    ) -> Iterator[Opened]:
        """``max_bytes``: the reader's cap (stores are asked for no more than one byte over it)."""
        scheme = scheme_of(url)
        if scheme == "s3":
            location = parse_s3(url)
            store = self._s3_store()
            yield Opened(store.size(location), store.stream(location, max_bytes))
        elif scheme == "ipfs":
            yield Opened(None, self._ipfs().cat(parse_ipfs(url), max_bytes))
        else:
            with self._open_http(url, method, headers or {}) as opened:
                yield opened

    @contextmanager
    def _open_http(self, url: str, method: str, headers: dict[str, str]) -> Iterator[Opened]:
        try:
            response = self.http.request(method, url, headers=headers, stream=True, timeout=TIMEOUT)
        except requests.TooManyRedirects:
            raise StorageError("too many redirects") from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientStorageError(f"connection failed ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise StorageError(f"request failed ({type(exc).__name__})") from None
        with response:
            if response.status_code >= 500 or response.status_code == 429:
                raise TransientStorageError(f"server answered HTTP {response.status_code}")
            if response.status_code >= 400:
                raise StorageError(f"server answered HTTP {response.status_code}")
            declared = response.headers.get("Content-Length")
            size = int(declared) if declared and declared.isdigit() else None
            kind = response.headers.get("Content-Type") or "application/octet-stream"
            yield Opened(size, _http_chunks(response), kind)

    def _s3_store(self) -> S3Store:
        if self.config.s3 is None:
            raise StorageError("s3:// files are not enabled on this node (no S3 endpoint or credentials)")
        if self._s3 is None:
            from c2d.storage.s3 import S3Store

            self._s3 = S3Store(self.config.s3)
        return self._s3

    def _ipfs(self) -> Kubo:
        if not self.config.ipfs_api:
            raise StorageError("ipfs:// files are not enabled on this node (no IPFS API)")
        if self._kubo is None:
            self._kubo = Kubo(self.config.ipfs_api, self.config.ipfs_timeout)
        return self._kubo


def _http_chunks(response: requests.Response) -> Iterator[bytes]:
    try:
        yield from response.iter_content(CHUNK)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
        raise TransientStorageError(f"transfer interrupted ({type(exc).__name__})") from None
