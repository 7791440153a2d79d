"""What the provider needs from a DDO: the service, its decrypted files, the algorithm's checksums."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import requests
from hexbytes import HexBytes
from web3 import Web3

from c2d.chain.documents import DocumentError, decrypt
from provider.exceptions import ComputeRequestError, FileUnavailable
from provider.indexer.store import DdoStore

MAX_CHECKSUM_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Service:
    index: int
    raw: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.raw.get("id", ""))

    @property
    def type(self) -> str:
        return str(self.raw.get("type", ""))

    @property
    def datatoken(self) -> str:
        return Web3.to_checksum_address(str(self.raw.get("datatokenAddress")))

    @property
    def timeout(self) -> int:
        return int(self.raw.get("timeout") or 0)

    @property
    def compute(self) -> dict[str, Any]:
        return dict(self.raw.get("compute") or {})


@dataclass(frozen=True)
class Asset:
    ddo: dict[str, Any]

    @property
    def did(self) -> str:
        return str(self.ddo["id"])

    @property
    def nft(self) -> str:
        return Web3.to_checksum_address(str(self.ddo["nftAddress"]))

    @property
    def type(self) -> str:
        return str((self.ddo.get("metadata") or {}).get("type", ""))

    @property
    def owner(self) -> str:
        return str((self.ddo.get("nft") or {}).get("owner", ""))

    @property
    def state(self) -> int:
        return int((self.ddo.get("nft") or {}).get("state", 0))

    @property
    def container(self) -> dict[str, Any]:
        return dict(((self.ddo.get("metadata") or {}).get("algorithm") or {}).get("container") or {})

    def service(self, service_id: str | None, resource: str) -> Service:
        for index, raw in enumerate(self.ddo.get("services") or []):
            if str(raw.get("id")) == str(service_id):
                return Service(index, raw)
        raise ComputeRequestError(f"{resource}.serviceId", "not_found", f"{self.did} has no service {service_id!r}")


def resolve(store: DdoStore, did: str | None, resource: str) -> Asset:
    if not did:
        raise ComputeRequestError(f"{resource}.documentId", "missing")
    ddo = store.get(did)
    if ddo is None:
        raise ComputeRequestError(f"{resource}.documentId", "did_not_found", f"{did} is not indexed by this node")
    asset = Asset(ddo)
    if asset.state not in (0, 5):
        raise ComputeRequestError(resource, "asset_not_consumable", f"{did} has NFT state {asset.state}")
    return asset


def service_files(asset: Asset, service: Service, private_key: str, resource: str) -> list[dict[str, Any]]:
    """The decrypted file objects of a service; they must have been encrypted to this provider."""
    try:
        plain = decrypt(bytes(HexBytes(str(service.raw.get("files", "")))), private_key)
        document = json.loads(plain)
    except (DocumentError, ValueError) as exc:
        raise ComputeRequestError(
            f"{resource}.serviceId", "compute_services_not_in_same_provider", f"files cannot be decrypted here: {exc}"
        ) from None
    if isinstance(document, list):  # DDO 4.0.0: a bare list
        return [dict(item) for item in document]
    if str(document.get("datatokenAddress", "")).lower() != service.datatoken.lower() or (
        str(document.get("nftAddress", "")).lower() != asset.nft.lower()
    ):
        raise ComputeRequestError(f"{resource}.serviceId", "files_mismatch", "files belong to another asset")
    return [dict(item) for item in document.get("files") or []]


def container_checksum(container: dict[str, Any]) -> str:
    return hashlib.sha256(f"{container.get('entrypoint', '')}{container.get('checksum', '')}".encode()).hexdigest()


@dataclass(frozen=True)
class FileProbe:
    content_type: str
    content_length: str | None  # as announced by the server
    size: int | None = None  # bytes read, when checksummed
    sha256: str | None = None


def probe_file(session: requests.Session, file: dict[str, Any], *, checksum: bool) -> FileProbe:
    """Request a ``url`` file object (its URL never leaves this function); stream it through sha256 with
    a size cap when ``checksum``. Raises FileUnavailable with a reason that names no URL."""
    if file.get("type", "url") != "url" or not file.get("url"):
        raise FileUnavailable(f"cannot read {file.get('type')!r} files")
    try:
        with session.request(
            str(file.get("method", "GET")), str(file["url"]), headers=file.get("headers") or {}, stream=True, timeout=30
        ) as response:
            if response.status_code >= 400:
                raise FileUnavailable(f"HTTP {response.status_code}")
            length = response.headers.get("Content-Length")
            probe = FileProbe(
                response.headers.get("Content-Type", "application/octet-stream"),
                length if length and length.isdigit() else None,
            )
            if not checksum:
                return probe
            digest, size = hashlib.sha256(), 0
            for chunk in response.iter_content(1024 * 1024):
                size += len(chunk)
                if size > MAX_CHECKSUM_BYTES:
                    raise FileUnavailable(f"file larger than {MAX_CHECKSUM_BYTES} bytes")
                digest.update(chunk)
    except requests.RequestException as exc:
        raise FileUnavailable(type(exc).__name__) from None
    return FileProbe(probe.content_type, str(size), size, digest.hexdigest())


def files_checksum(files: list[dict[str, Any]], session: requests.Session) -> str:
    """Ocean's filesChecksum: the sha256 hex of each file's content, concatenated, in order."""
    parts = []
    for file in files:
        try:
            parts.append(str(probe_file(session, file, checksum=True).sha256))
        except FileUnavailable as exc:
            raise ComputeRequestError("algorithm", "file_unavailable", exc.message) from None
    return "".join(parts).lower()
