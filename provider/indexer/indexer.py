"""Follow MetadataCreated/MetadataUpdated on the chain and keep the DDOs in Postgres.

Each event's document is decoded with the provider key (:mod:`c2d.chain.documents`), checked (hash,
``id`` = did:op:sha256(checksummed NFT address + chain id), ``chainId``, ``nftAddress``) and enriched
the way Aquarius does (``nft``, ``datatokens``, ``event``); ``nft.owner`` follows the NFT's
``Transfer`` events (a result asset is handed to its consumer after it is published). Events that fail are recorded in
``indexer_rejects`` with the reason and skipped. Progress is stored with each batch, so a restart
resumes where it stopped and replaying a batch changes nothing.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

import psycopg
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import Web3Exception

from c2d.chain.client import Chain
from c2d.chain.documents import DocumentError, decode_document
from c2d.chain.transactions import compute_did
from provider.indexer.store import DdoStore, IndexedDdo, OwnerChange

log = logging.getLogger(__name__)
BATCH_BLOCKS = 2000
EVENTS = ("MetadataCreated", "MetadataUpdated")
TRANSFER_TOPIC = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")


def _hex(value: object) -> str:
    text = value.hex() if isinstance(value, bytes | bytearray) else str(value)
    return text if text.startswith("0x") else "0x" + text


class Indexer:
    def __init__(self, chain: Chain, store: DdoStore, account: LocalAccount, start_block: int = 0) -> None:
        self.chain = chain
        self.store = store
        self.account = account
        self.start_block = start_block
        self.template = chain.contract("ERC721Template", "0x" + "00" * 20)
        self.topics = [_hex(self.template.events[name]().topic) for name in EVENTS]
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.synced = threading.Condition()
        self.synced_block = -1

    def run_once(self) -> int:
        """Index up to the chain head; returns the last block indexed."""
        chain_id = self.chain.chain_id
        head = self.chain.w3.eth.block_number
        last = self.store.last_block(chain_id)
        start = self.start_block if last is None else last + 1
        while start <= head:
            end = min(head, start + BATCH_BLOCKS - 1)
            logs = self.chain.w3.eth.get_logs({"fromBlock": start, "toBlock": end, "topics": [self.topics]})
            ddos: list[IndexedDdo] = []
            rejects: list[tuple[str, int, str, str]] = []
            for entry in logs:
                try:
                    ddos.append(self._ddo(entry, chain_id))
                except (DocumentError, ValueError, Web3Exception) as exc:
                    tx = Web3.to_hex(entry["transactionHash"])
                    log.warning("metadata event in %s (%s) rejected: %s", tx, entry["address"], exc)
                    rejects.append((tx, int(entry["logIndex"]), str(entry["address"]), str(exc)))
            nfts = {item.nft_address for item in ddos} | set(self.store.nft_addresses(chain_id))
            self.store.save(chain_id, end, ddos, rejects, self._transfers(nfts, start, end))
            start = end + 1
        with self.synced:
            self.synced_block = head
            self.synced.notify_all()
        return head

    def _ddo(self, entry: Any, chain_id: int) -> IndexedDdo:
        nft_address = Web3.to_checksum_address(entry["address"])
        topic = _hex(entry["topics"][0])
        event = self.template.events[EVENTS[self.topics.index(topic)]]().process_log(entry)
        args = event["args"]
        ddo = decode_document(args["flags"], args["data"], self.account.key.hex(), bytes(args["metaDataHash"]))
        did = compute_did(nft_address, chain_id)
        if ddo.get("id") != did:
            raise ValueError(f"DDO id {ddo.get('id')!r} is not {did} (sha256 of NFT address and chain id)")
        if int(ddo.get("chainId", -1)) != chain_id:
            raise ValueError(f"DDO chainId {ddo.get('chainId')!r} is not {chain_id}")
        if str(ddo.get("nftAddress", "")).lower() != nft_address.lower():
            raise ValueError(f"DDO nftAddress {ddo.get('nftAddress')!r} is not the emitting NFT {nft_address}")
        tx = Web3.to_hex(entry["transactionHash"])
        block = self.chain.w3.eth.get_block(entry["blockNumber"])
        ddo["nft"] = self._nft(nft_address, int(args["state"]), int(entry["blockNumber"]), int(block["timestamp"]))
        ddo["datatokens"] = self._datatokens(nft_address, ddo)
        ddo["event"] = {
            "tx": tx,
            "block": int(entry["blockNumber"]),
            "from": str(args.get("createdBy") or args.get("updatedBy")),
            "contract": nft_address,
            "datetime": datetime.fromtimestamp(int(block["timestamp"]), UTC).isoformat(),
        }
        return IndexedDdo(did, nft_address, tx, int(entry["blockNumber"]), int(entry["logIndex"]), ddo)

    def _transfers(self, nfts: set[str], start: int, end: int) -> list[OwnerChange]:
        """New owners of the indexed data NFTs in [start, end] (ERC721 ``Transfer`` of token 1), in chain order."""
        if not nfts:
            return []
        logs = self.chain.w3.eth.get_logs(
            {
                "fromBlock": start,
                "toBlock": end,
                "address": [Web3.to_checksum_address(nft) for nft in sorted(nfts)],
                "topics": [TRANSFER_TOPIC],
            }
        )
        changes = []
        for entry in logs:
            topics = entry["topics"]
            if len(topics) != 4 or int(_hex(topics[3]), 16) != 1:  # ERC20 transfers have 3 topics
                continue
            owner = Web3.to_checksum_address("0x" + _hex(topics[2])[-40:])
            changes.append(
                OwnerChange(Web3.to_checksum_address(entry["address"]), owner, entry["blockNumber"], entry["logIndex"])
            )
        return changes

    def _nft(self, address: str, state: int, block: int, timestamp: int) -> dict[str, Any]:
        nft = self.chain.contract("ERC721Template", address)
        return {
            "address": address,
            "name": nft.functions.name().call(),
            "symbol": nft.functions.symbol().call(),
            # the owner when the metadata was set: later Transfer events update it (see _transfers)
            "owner": nft.functions.ownerOf(1).call(block_identifier=block),
            "state": state,
            "created": datetime.fromtimestamp(timestamp, UTC).isoformat(),
            "tokenURI": nft.functions.tokenURI(1).call(),
        }

    def _datatokens(self, nft_address: str, ddo: dict[str, Any]) -> list[dict[str, Any]]:
        nft = self.chain.contract("ERC721Template", nft_address)
        service_of = {str(s.get("datatokenAddress", "")).lower(): s.get("id") for s in ddo.get("services") or []}
        tokens = []
        for address in nft.functions.getTokensList().call():
            token = self.chain.contract("ERC20Template", address)
            tokens.append(
                {
                    "address": address,
                    "name": token.functions.name().call(),
                    "symbol": token.functions.symbol().call(),
                    "serviceId": service_of.get(address.lower()),
                }
            )
        return tokens

    # -- background ---------------------------------------------------------------------------
    def start(self, interval: float = 0.5) -> None:
        self.thread = threading.Thread(target=self._loop, args=(interval,), name="c2d-indexer", daemon=True)
        self.thread.start()

    def _loop(self, interval: float) -> None:
        while not self.stopping.is_set():
            try:
                self.run_once()
            except (Web3Exception, OSError, psycopg.OperationalError) as exc:  # chain or database away: later
                log.warning("indexer: %s", exc)
            self.stopping.wait(interval)

    def wait_synced(self, block: int, timeout: float) -> bool:
        with self.synced:
            return self.synced.wait_for(lambda: self.synced_block >= block, timeout)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
