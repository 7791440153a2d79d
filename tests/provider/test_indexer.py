"""The indexer follows metadata events on the real chain; the Aquarius-compatible API serves the DDOs."""

from __future__ import annotations

import json
from collections.abc import Callable

import ecies
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.chain.documents import encrypt, public_key_hex
from c2d.chain.transactions import create_data_nft, publish_ddo, transfer_nft
from c2d.db.pool import Pool
from provider.indexer.indexer import Indexer
from provider.indexer.store import DdoStore
from provider.publishing import make_ddo

PROVIDER_URL = "http://127.0.0.1:8030"


def _to(account: LocalAccount) -> Callable[[bytes], bytes]:
    """ECIES to ``account``'s public key, as the provider's /encrypt does for its own key."""
    public_key = public_key_hex(bytes(account.key))
    return lambda data: encrypt(data, public_key)


def test_encrypt_endpoint_encrypts_to_the_provider(client: TestClient, provider_account: LocalAccount) -> None:
    files = json.dumps({"files": [{"type": "url", "url": "https://example.com/x", "method": "GET"}]}).encode()
    response = client.post("/api/services/encrypt", params={"chainId": 8996}, content=files)
    assert response.status_code == 201
    assert ecies.decrypt(provider_account.key.hex(), bytes.fromhex(response.text[2:])) == files
    assert client.post("/api/services/encrypt", params={"chainId": 1}, content=files).status_code == 400
    assert client.post("/api/services/encrypt", content=b"").status_code == 400


def test_publish_index_update_and_serve(
    client: TestClient,
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    provider_account: LocalAccount,
    pool: Pool,
) -> None:
    indexer = Indexer(chain, DdoStore(pool), provider_account)
    asset = create_data_nft(chain, addresses, publisher, "Indexed", "IDX")
    ddo = make_ddo(asset, PROVIDER_URL, "0xfiles")
    first = publish_ddo(chain, publisher, asset.nft, ddo, PROVIDER_URL, provider_account.address, _to(provider_account))
    indexer.run_once()

    served = client.get(f"/api/aquarius/assets/ddo/{asset.did}").json()
    assert served["id"] == asset.did and served["metadata"]["name"] == "test asset"
    assert served["nft"]["owner"] == publisher.address and served["nft"]["state"] == 0
    assert served["datatokens"] == [
        {"address": asset.datatoken, "name": "Indexed datatoken", "symbol": "IDX-DT", "serviceId": "svc-0"}
    ]
    assert served["event"]["tx"] == first["transactionHash"].to_0x_hex()
    assert client.get(f"/api/aquarius/assets/metadata/{asset.did}").json()["type"] == "dataset"

    ddo["metadata"]["name"] = "renamed"
    second = publish_ddo(
        chain, publisher, asset.nft, ddo, PROVIDER_URL, provider_account.address, _to(provider_account)
    )
    indexer.run_once()
    indexer.run_once()  # replaying changes nothing
    served = client.get(f"/api/aquarius/assets/ddo/{asset.did}").json()
    assert served["metadata"]["name"] == "renamed"
    assert served["event"]["tx"] == second["transactionHash"].to_0x_hex()
    hits = client.post("/api/aquarius/assets/query", json={"query": {"query_string": {"query": "renamed"}}}).json()
    assert [hit["_source"]["id"] for hit in hits["hits"]["hits"]] == [asset.did]


def test_nft_owner_follows_transfers(
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    consumer: LocalAccount,
    provider_account: LocalAccount,
    pool: Pool,
) -> None:
    store = DdoStore(pool)
    indexer = Indexer(chain, store, provider_account)
    indexed = create_data_nft(chain, addresses, publisher, "Moved", "MOV")
    publish_ddo(
        chain,
        publisher,
        indexed.nft,
        make_ddo(indexed, PROVIDER_URL, "0x"),
        PROVIDER_URL,
        provider_account.address,
        _to(provider_account),
    )
    indexer.run_once()
    assert (store.get(indexed.did) or {})["nft"]["owner"] == publisher.address
    transfer_nft(chain, publisher, indexed.nft, consumer.address)  # after the DDO was indexed
    # and one published and handed over before the indexer saw either event
    unseen = create_data_nft(chain, addresses, publisher, "Handed", "HND")
    publish_ddo(
        chain,
        publisher,
        unseen.nft,
        make_ddo(unseen, PROVIDER_URL, "0x"),
        PROVIDER_URL,
        provider_account.address,
        _to(provider_account),
    )
    transfer_nft(chain, publisher, unseen.nft, consumer.address)
    indexer.run_once()
    assert (store.get(indexed.did) or {})["nft"]["owner"] == consumer.address
    assert (store.get(unseen.did) or {})["nft"]["owner"] == consumer.address
    indexer.run_once()  # replaying changes nothing
    assert (store.get(unseen.did) or {})["nft"]["owner"] == consumer.address


def test_bad_documents_are_rejected_with_a_reason(
    client: TestClient,
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    consumer: LocalAccount,
    provider_account: LocalAccount,
    pool: Pool,
) -> None:
    store = DdoStore(pool)
    indexer = Indexer(chain, store, provider_account)
    wrong_id = create_data_nft(chain, addresses, publisher, "WrongId", "WID")
    ddo = make_ddo(wrong_id, PROVIDER_URL, "0xfiles")
    ddo["id"] = "did:op:" + "ab" * 32
    bad = publish_ddo(
        chain, publisher, wrong_id.nft, ddo, PROVIDER_URL, provider_account.address, _to(provider_account)
    )
    other_key = create_data_nft(chain, addresses, publisher, "OtherKey", "OKY")
    hidden = publish_ddo(
        chain,
        publisher,
        other_key.nft,
        make_ddo(other_key, PROVIDER_URL, "0x"),
        PROVIDER_URL,
        consumer.address,
        _to(consumer),
    )
    indexer.run_once()
    rejects = dict(store.rejects(chain.chain_id))
    assert "is not " + wrong_id.did in rejects[bad["transactionHash"].to_0x_hex()]
    assert "cannot decrypt" in rejects[hidden["transactionHash"].to_0x_hex()]
    for did in (wrong_id.did, other_key.did):
        response = client.get(f"/api/aquarius/assets/ddo/{did}")
        assert response.status_code == 404 and "not found in Elasticsearch" in response.json()["error"]


def test_decrypt_only_for_authorized_decrypters(
    client: TestClient, provider_account: LocalAccount, consumer: LocalAccount
) -> None:
    import lzma

    from c2d.chain.documents import ddo_bytes, ddo_hash
    from c2d.chain.signing import sign_message
    from tests.helpers import fresh_nonce

    ddo = {"id": "did:op:" + "aa" * 32, "metadata": {"name": "secret"}}
    document = encrypt(lzma.compress(ddo_bytes(ddo)), public_key_hex(bytes(provider_account.key)))
    nft = "0x" + "33" * 20

    def body(signer: LocalAccount) -> dict[str, object]:
        nonce = fresh_nonce()
        return {
            "decrypterAddress": signer.address,
            "chainId": 8996,
            "dataNftAddress": nft,
            "encryptedDocument": "0x" + document.hex(),
            "flags": "0x03",
            "documentHash": "0x" + ddo_hash(ddo_bytes(ddo)).hex(),
            "nonce": nonce,
            "signature": sign_message(signer.key.hex(), f"{nft}{signer.address}8996{nonce}"),
        }

    allowed = client.post("/api/services/decrypt", json=body(provider_account))
    assert allowed.status_code == 200 and json.loads(allowed.text) == ddo
    refused = client.post("/api/services/decrypt", json=body(consumer))
    assert refused.status_code == 403 and refused.json() == {"error": "Decrypter not authorized"}
