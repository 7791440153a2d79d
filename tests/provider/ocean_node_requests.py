"""Requests of ocean-node's protocol as ocean.js sends them, for the provider tests: signatures, bodies, an escrow
consumer (ocean.js's verifyFundsForEscrowPayment), and the orders made out to the node."""

from __future__ import annotations

import hashlib
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes

from c2d.chain.escrow import Escrow
from c2d.chain.signing import ProviderFee, ocean_js_payload
from c2d.chain.transactions import DataAsset
from c2d.db.jobs import JobStore
from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from tests.c2d.escrow_parties import OCEAN, funded_account
from tests.helpers import fresh_nonce

from .market import Market

ALGORITHM = (
    b"import os, json\n"
    b"did = json.loads(os.environ['DIDS'])[0]\n"
    b"rows = open(f'/data/inputs/{did}/0').read().split()\n"
    b"open('/data/outputs/count.txt', 'w').write(str(len(rows)))\n"
)
SLOW = b"import time\nprint('started', flush=True)\ntime.sleep(60)\n"
DATA = b"a\nb\nc\n"
ENV = "local-cpu"


def sign_like_ocean_js(account: LocalAccount, message: str) -> str:
    """ocean.js's signRequest: EIP-191 over the keccak digest as ethers' toBeArray makes it (no leading zeros)."""
    signed = Account.sign_message(encode_defunct(primitive=ocean_js_payload(message)), account.key)
    return HexBytes(signed.signature).to_0x_hex()


def signed(account: LocalAccount, command: str, nonce: str | None = None) -> dict[str, str]:
    """ocean.js's signature: over the address as sent + nonce + command."""
    nonce = nonce or fresh_nonce()
    return {
        "consumerAddress": account.address,
        "nonce": nonce,
        "signature": sign_like_ocean_js(account, f"{account.address}{nonce}{command}"),
    }


def trusting(algorithm: DataAsset) -> dict[str, Any]:
    trust = {"did": algorithm.did, "filesChecksum": hashlib.sha256(ALGORITHM).hexdigest()}
    return {
        "compute": {
            "allowRawAlgorithm": False,
            "publisherTrustedAlgorithms": [trust],
            "publisherTrustedAlgorithmPublishers": [],
        }
    }


def free_body(dataset: DataAsset, algorithm: DataAsset, **extra: Any) -> dict[str, Any]:
    return {
        "environment": ENV,
        "datasets": [{"documentId": dataset.did, "serviceId": "svc-0"}],
        "algorithm": {"documentId": algorithm.did, "serviceId": "svc-0", "meta": {"language": "python"}},
        **extra,
    }


def job_count(pool: Pool, consumer: LocalAccount) -> int:
    return len(JobStore(pool).find(consumer.address))


def paid_start(
    market: Market, consumer: LocalAccount, dataset: DataAsset, algorithm: DataAsset, **changes: Any
) -> dict[str, Any]:
    """initializeCompute (ocean-node's), the orders made out to the node and paid by ``consumer``, and the
    signed start body."""
    quote = market.client.post(
        "/api/services/initializeCompute", json=node_initialize(market, consumer, dataset, algorithm)
    )
    assert quote.status_code == 200, quote.text
    answer = quote.json()
    txs = [
        market.order(consumer, asset, ProviderFee.from_wire(part["providerFee"]))
        for asset, part in ((dataset, answer["datasets"][0]), (algorithm, answer["algorithm"]))
    ]
    body = {
        "environment": ENV,
        "maxJobDuration": 120,
        "resources": [{"id": "cpu", "amount": 1}],
        "datasets": [{"documentId": dataset.did, "serviceId": "svc-0", "transferTxId": txs[0]}],
        "algorithm": {"documentId": algorithm.did, "serviceId": "svc-0", "transferTxId": txs[1]},
        "payment": {"chainId": 8996, "token": market.addresses.ocean},
    }
    return body | changes | signed(consumer, "startCompute")


def node_initialize(
    market: Market, consumer: LocalAccount, dataset: DataAsset, algorithm: DataAsset, **tx: str
) -> dict[str, Any]:
    return {
        "datasets": [{"documentId": dataset.did, "serviceId": "svc-0", "transferTxId": tx.get("data")}],
        "algorithm": {"documentId": algorithm.did, "serviceId": "svc-0", "transferTxId": tx.get("algo")},
        "environment": ENV,
        "consumerAddress": consumer.address,
        "maxJobDuration": 120,
        "payment": {"chainId": 8996, "token": market.addresses.ocean, "resources": [{"id": "cpu", "amount": 1}]},
    }


def escrow_consumer(market: Market, stack: Stack, provider: LocalAccount, deposit: int) -> LocalAccount:
    """A fresh consumer with OCEAN, ``deposit`` of it in the escrow and the node authorized (ocean.js's
    verifyFundsForEscrowPayment)."""
    consumer = funded_account(market.chain, stack.settings, market.addresses.ocean, 100 * OCEAN)
    escrow = Escrow(market.chain, str(market.addresses.escrow))
    if deposit:
        escrow.deposit(consumer, market.addresses.ocean, deposit)
        escrow.authorize(consumer, market.addresses.ocean, provider.address, 50 * OCEAN, 7200, 10)
    return consumer
