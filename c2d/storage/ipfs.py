"""IPFS through a Kubo node's HTTP RPC API (``/api/v0``), streamed both ways with constant memory.

Why not ``ipfshttpclient``: it is unmaintained and refuses Kubo >= 0.8 (its version check); the RPC
API is a small, documented HTTP interface (https://docs.ipfs.tech/reference/kubo/rpc/), so four calls
over ``requests`` (already a dependency) are less code and risk than another client library.
Uploads are a hand-streamed multipart body (``requests`` would build the whole body in memory).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any, BinaryIO

import requests

from c2d.exceptions import ObjectNotFoundError, StorageError, TransientStorageError
from c2d.storage.locations import IpfsLocation, ipfs_location

CHUNK = 1024 * 1024
NOT_FOUND_MARKERS = ("not found", "no link named", "is not a valid", "invalid path", "invalid cid")


class Kubo:
    def __init__(self, api_url: str, timeout: float = 60.0) -> None:
        self.base = api_url.rstrip("/") + "/api/v0"
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # the operator's node, never through a proxy

    def _post(self, command: str, what: str, *, stream: bool = False, **kwargs: Any) -> requests.Response:
        # Kubo's own timeout makes a lookup of unknown content end (an online node would search forever).
        params = {**kwargs.pop("params", {}), "timeout": f"{int(self.timeout)}s"}
        try:
            response = self.session.post(
                f"{self.base}/{command}", params=params, stream=stream, timeout=(10, self.timeout + 5), **kwargs
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientStorageError(f"{what}: IPFS node unreachable ({type(exc).__name__})") from None
        if response.status_code == 200:
            return response
        message = _error_message(response)
        response.close()
        lowered = message.lower()
        if any(marker in lowered for marker in NOT_FOUND_MARKERS) or "context deadline exceeded" in lowered:
            raise ObjectNotFoundError(f"{what}: {message}")
        if response.status_code >= 500 and "offline" not in lowered:
            raise TransientStorageError(f"{what}: IPFS node answered {response.status_code}: {message}")
        raise StorageError(f"{what}: {message}")

    def version(self) -> str:
        return str(self._post("version", "version").json().get("Version", ""))

    def cat(self, location: IpfsLocation, max_bytes: int | None = None) -> Iterator[bytes]:
        """The content in chunks; at most ``max_bytes`` + 1 are asked for (the caller enforces the cap)."""
        return self.cat_range(location, 0, max_bytes + 1 if max_bytes is not None else None)

    def cat_range(self, location: IpfsLocation, offset: int, length: int | None) -> Iterator[bytes]:
        """``length`` bytes of the content from ``offset`` (None: to its end) in chunks (``cat``'s offset and
        length); nothing is asked of the node before the first chunk is."""
        what = f"CID {location.cid}"
        params: dict[str, str] = {"arg": location.arg}
        if offset:
            params["offset"] = str(offset)
        if length is not None:
            params["length"] = str(length)
        return self._cat(what, params)

    def _cat(self, what: str, params: dict[str, str]) -> Iterator[bytes]:
        response = self._post("cat", what, stream=True, params=params)
        try:
            yield from response.iter_content(CHUNK)
            # Kubo reports an error that happens after the headers in a trailer header.
            trailer = response.raw.headers.get("X-Stream-Error") if response.raw is not None else None
            if trailer:
                raise TransientStorageError(f"{what}: {trailer}")
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise TransientStorageError(f"{what}: transfer interrupted ({type(exc).__name__})") from None
        finally:
            response.close()

    def add(self, source: BinaryIO) -> tuple[IpfsLocation, int]:
        """Add and pin the bytes of ``source`` from its current position to its end (CIDv1, raw leaves),
        streamed; returns its location and the number of bytes added."""
        boundary = secrets.token_hex(16)
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        params = {"pin": "true", "cid-version": "1", "quieter": "true"}
        sent = [0]
        response = self._post("add", "add", params=params, data=_multipart(source, boundary, sent), headers=headers)
        with response:
            lines = [line for line in response.text.splitlines() if line.strip()]
        try:
            answer = json.loads(lines[-1])
            location = ipfs_location(str(answer["Hash"]))
        except (IndexError, KeyError, ValueError) as exc:
            raise StorageError(f"add: unexpected answer from the IPFS node ({exc})") from None
        return location, sent[0]

    def unpin(self, location: IpfsLocation) -> None:
        try:
            self._post("pin/rm", f"unpin {location.cid}", params={"arg": location.cid}).close()
        except StorageError as exc:
            if "not pinned" not in str(exc):
                raise


def _multipart(source: BinaryIO, boundary: str, sent: list[int]) -> Iterator[bytes]:
    """One file part, streamed (sent with chunked transfer encoding); ``sent[0]`` counts the file's bytes.
    The part's file name is fixed: a name of the caller's never goes into the request's headers."""
    yield (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="file"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    while chunk := source.read(CHUNK):
        sent[0] += len(chunk)
        yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def _error_message(response: requests.Response) -> str:
    try:
        return str(response.json().get("Message", "")) or f"HTTP {response.status_code}"
    except ValueError:
        return response.text[:200] or f"HTTP {response.status_code}"
