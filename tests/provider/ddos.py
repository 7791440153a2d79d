"""DDO v4 documents for tests, shaped like the ones ocean.py publishes."""

from __future__ import annotations

from typing import Any

from c2d.chain.assets import DataAsset


def make_ddo(
    asset: DataAsset,
    provider_url: str,
    encrypted_files: str,
    *,
    kind: str = "dataset",
    service_type: str = "compute",
    compute: dict[str, Any] | None = None,
    container: dict[str, str] | None = None,
    name: str = "test asset",
    timeout: int = 3600,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "created": "2026-11-22T00:00:00Z",
        "updated": "2026-11-22T00:00:00Z",
        "description": "an asset for tests",
        "name": name,
        "type": kind,
        "author": "tests",
        "license": "CC0",
    }
    if kind == "algorithm":
        metadata["algorithm"] = {
            "language": "python",
            "version": "0.1",
            "container": container
            or {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11-slim", "checksum": "sha256:" + "0" * 64},
        }
    service: dict[str, Any] = {
        "id": "svc-0",
        "type": service_type,
        "files": encrypted_files,
        "datatokenAddress": asset.datatoken,
        "serviceEndpoint": provider_url,
        "timeout": timeout,
    }
    if service_type == "compute":
        service["compute"] = compute or {
            "allowRawAlgorithm": False,
            "allowNetworkAccess": False,
            "publisherTrustedAlgorithms": [],
            "publisherTrustedAlgorithmPublishers": [],
        }
    return {
        "@context": ["https://w3id.org/did/v1"],
        "id": asset.did,
        "version": "4.1.0",
        "chainId": asset.chain_id,
        "nftAddress": asset.nft,
        "metadata": metadata,
        "services": [service],
    }
