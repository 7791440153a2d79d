"""A tiny market for the provider tests: publish datasets and algorithms on the real chain, index them,
order them the way ocean.py does (initializeCompute, then startOrder), and start jobs."""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.chain.documents import encrypt, public_key_hex
from c2d.chain.signing import ProviderFee, sign_message
from c2d.chain.transactions import ONE_TOKEN, DataAsset, create_data_nft, mint_datatokens, publish_ddo, start_order
from c2d.db.pool import Pool
from provider.indexer.indexer import Indexer
from provider.indexer.store import DdoStore
from provider.publishing import make_ddo
from tests.fileserver import FileServer
from tests.helpers import fresh_nonce

_names = itertools.count(1)


@dataclass
class Market:
    client: httpx.Client  # the app in process (TestClient) or a provider served elsewhere
    chain: Chain
    addresses: OceanAddresses
    publisher: LocalAccount
    provider_public_key: str
    provider_address: str
    indexer: Indexer
    files: FileServer
    env: str = "local-cpu"
    published: dict[str, DataAsset] = field(default_factory=dict)

    def publish(
        self, kind: str, content: bytes, *, file_objects: list[dict[str, Any]] | None = None, **ddo_args: Any
    ) -> DataAsset:
        """Publish ``content`` served by the test file server, or the given ``file_objects`` (s3, ipfs...)."""
        n = next(_names)
        asset = create_data_nft(self.chain, self.addresses, self.publisher, f"Asset{n}", f"A{n}")
        if file_objects is None:
            path = f"/asset{n}.{'py' if kind == 'algorithm' else 'csv'}"
            self.files.files[path] = content
            file_objects = [{"type": "url", "url": f"{self.files.url}{path}", "method": "GET"}]
        files = {"datatokenAddress": asset.datatoken, "nftAddress": asset.nft, "files": file_objects}
        encrypted = "0x" + encrypt(json.dumps(files).encode(), self.provider_public_key).hex()
        service_type = "access" if kind == "algorithm" else "compute"
        ddo = make_ddo(asset, "http://provider", encrypted, kind=kind, service_type=service_type, **ddo_args)
        publish_ddo(
            self.chain,
            self.publisher,
            asset.nft,
            ddo,
            "http://provider",
            self.provider_address,
            lambda data: encrypt(data, self.provider_public_key),
        )
        self.indexer.run_once()
        self.published[asset.did] = asset
        return asset

    def initialize(
        self, consumer: LocalAccount, dataset: DataAsset, algorithm: DataAsset | None, valid_for: int = 600
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "datasets": [{"documentId": dataset.did, "serviceId": "svc-0"}],
            "algorithm": {"documentId": algorithm.did, "serviceId": "svc-0"}
            if algorithm
            else {"meta": {"rawcode": "x"}},
            "compute": {"env": self.env, "validUntil": int(time.time()) + valid_for},
            "consumerAddress": consumer.address,
        }
        response = self.client.post("/api/services/initializeCompute", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def order(self, consumer: LocalAccount, asset: DataAsset, fee: ProviderFee) -> str:
        mint_datatokens(self.chain, self.publisher, asset.datatoken, consumer.address, ONE_TOKEN)
        tx, _ = start_order(self.chain, consumer, asset.datatoken, self.provider_address, 0, fee)
        return tx

    def buy(self, consumer: LocalAccount, dataset: DataAsset, algorithm: DataAsset | None) -> tuple[str, str | None]:
        """initializeCompute + startOrder for the dataset (and algorithm): the transferTxIds."""
        answer = self.initialize(consumer, dataset, algorithm)
        data_tx = self.order(consumer, dataset, ProviderFee.from_wire(answer["datasets"][0]["providerFee"]))
        algo_tx = None
        if algorithm is not None:
            algo_tx = self.order(consumer, algorithm, ProviderFee.from_wire(answer["algorithm"]["providerFee"]))
        return data_tx, algo_tx

    def start_body(
        self,
        consumer: LocalAccount,
        dataset: DataAsset,
        data_tx: str,
        algorithm: DataAsset | None,
        algo_tx: str | None,
        *,
        signer: LocalAccount | None = None,
        raw: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        nonce = fresh_nonce()
        signer = signer or consumer
        algo: dict[str, Any] = (
            {"meta": raw}
            if raw is not None
            else {"documentId": algorithm.did, "serviceId": "svc-0", "transferTxId": algo_tx}  # type: ignore[union-attr]
        )
        return {
            "dataset": {"documentId": dataset.did, "serviceId": "svc-0", "transferTxId": data_tx},
            "algorithm": algo,
            "environment": self.env,
            "consumerAddress": consumer.address,
            "nonce": nonce,
            "signature": sign_message(signer.key.hex(), f"{consumer.address}{dataset.did}{nonce}"),
            "additionalInputs": [],
        }

    def start_trusted(
        self, consumer: LocalAccount, algorithm_code: bytes, data: bytes, container: dict[str, str] | None = None
    ) -> Started:
        """Publish an algorithm (in ``container``, default python:3.11-slim) and a dataset trusting it (DID +
        files checksum), buy both, start a job."""
        ddo_args: dict[str, Any] = {"container": container} if container else {}
        algorithm = self.publish("algorithm", algorithm_code, **ddo_args)
        checksum = hashlib.sha256(algorithm_code).hexdigest()
        trust = {"did": algorithm.did, "filesChecksum": checksum}
        dataset = self.publish(
            "dataset",
            data,
            compute={
                "allowRawAlgorithm": False,
                "publisherTrustedAlgorithms": [trust],
                "publisherTrustedAlgorithmPublishers": [],
            },
        )
        data_tx, algo_tx = self.buy(consumer, dataset, algorithm)
        body = self.start_body(consumer, dataset, data_tx, algorithm, algo_tx)
        return Started(self.client.post("/api/services/compute", json=body), dataset, algorithm, data_tx, algo_tx)


@dataclass(frozen=True)
class Started:
    response: Any
    dataset: DataAsset
    algorithm: DataAsset
    data_tx: str
    algo_tx: str | None


def open_market(
    client: httpx.Client,
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    provider: LocalAccount,
    pool: Pool,
    files: FileServer,
) -> Market:
    """A market over ``client``'s app, with its own indexer of the real chain."""
    indexer = Indexer(chain, DdoStore(pool), provider)
    return Market(
        client, chain, addresses, publisher, public_key_hex(bytes(provider.key)), provider.address, indexer, files
    )
