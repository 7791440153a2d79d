"""Publisher side: DDO v4 documents shaped like the ones ocean.py publishes, and publishing them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from eth_account.signers.local import LocalAccount

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.chain.transactions import DataAsset, create_data_nft, publish_ddo
from provider.client import ProviderClient


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
    description: str = "an asset for tests",
    author: str = "tests",
    timeout: int = 3600,
) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    metadata: dict[str, Any] = {
        "created": now,
        "updated": now,
        "description": description,
        "name": name,
        "type": kind,
        "author": author,
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


def files_document(asset: DataAsset, urls: list[str]) -> bytes:
    """The plaintext of a service's ``files``: bound to the datatoken and NFT, as ocean.py builds it."""
    files = [{"type": "url", "url": url, "method": "GET"} for url in urls]
    return json.dumps({"datatokenAddress": asset.datatoken, "nftAddress": asset.nft, "files": files}).encode()


def publish_asset(
    chain: Chain,
    addresses: OceanAddresses,
    client: ProviderClient,
    publisher: LocalAccount,
    provider_url: str,
    provider_address: str,
    name: str,
    urls: list[str],
    **ddo_args: Any,
) -> DataAsset:
    """Create the NFT + datatoken, encrypt files and DDO through the provider, setMetaData, wait for the index."""
    symbol = "".join(ch for ch in name.upper() if ch.isalnum())[:8] or "ASSET"
    asset = create_data_nft(chain, addresses, publisher, name, symbol)
    encrypted = "0x" + client.encrypt(files_document(asset, urls), chain.chain_id).hex()
    ddo = make_ddo(asset, provider_url, encrypted, name=name, **ddo_args)
    publish_ddo(
        chain,
        publisher,
        asset.nft,
        ddo,
        provider_url,
        provider_address,
        lambda data: client.encrypt(data, chain.chain_id),
    )
    client.wait_ddo(asset.did)
    return asset
