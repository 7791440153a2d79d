"""What the provider needs from a DDO: the service, its decrypted files, the algorithm's checksums."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes
from web3 import Web3

from c2d.chain.documents import DocumentError, decrypt
from c2d.exceptions import StorageError
from c2d.storage.locations import LocationError
from c2d.storage.sources import Sources
from provider.exceptions import ComputeRequestError, FileUnavailable
from provider.indexer.store import DdoStore
from provider.models import Ddo
from workflows.spec import InputFile

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
    ddo: Ddo

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
    content_length: str | None  # as announced by the source
    size: int | None = None  # bytes read, when checksummed
    sha256: str | None = None


def probe_file(sources: Sources, file: InputFile, *, checksum: bool) -> FileProbe:
    """Open a file (its location never leaves this function); stream it through sha256 with a size cap
    when ``checksum``. Raises FileUnavailable with a reason that names no URL."""
    try:
        with sources.open(file.url, MAX_CHECKSUM_BYTES, file.method, file.headers) as opened:
            length = str(opened.size) if opened.size is not None else None
            if not checksum:
                return FileProbe(opened.content_type, length)
            digest, size = hashlib.sha256(), 0
            for chunk in opened.chunks:
                size += len(chunk)
                if size > MAX_CHECKSUM_BYTES:
                    raise FileUnavailable(f"file larger than {MAX_CHECKSUM_BYTES} bytes")
                digest.update(chunk)
    except (StorageError, LocationError) as exc:
        raise FileUnavailable(str(exc)) from None
    return FileProbe(opened.content_type, str(size), size, digest.hexdigest())


def files_checksum(files: list[InputFile], sources: Sources) -> str:
    """Ocean's filesChecksum: the sha256 hex of each file's content, concatenated, in order."""
    parts = []
    for file in files:
        try:
            parts.append(str(probe_file(sources, file, checksum=True).sha256))
        except FileUnavailable as exc:
            raise ComputeRequestError("algorithm", "file_unavailable", exc.message) from None
    return "".join(parts).lower()
