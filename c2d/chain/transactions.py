"""Publisher and consumer operations on the Ocean contracts: data NFTs, datatokens, orders."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.logs import DISCARD
from web3.types import TxReceipt

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.chain.signing import ZERO_ADDRESS, ProviderFee
from c2d.exceptions import ChainError

ONE_TOKEN = 10**18
DEFAULT_CAP = 10**6 * ONE_TOKEN


def compute_did(nft_address: str, chain_id: int) -> str:
    """did:op: + sha256(checksummed NFT address + chain id)."""
    digest = hashlib.sha256(f"{Web3.to_checksum_address(nft_address)}{chain_id}".encode()).hexdigest()
    return f"did:op:{digest}"


@dataclass(frozen=True)
class DataAsset:
    """A data NFT with one datatoken."""

    nft: str
    datatoken: str
    chain_id: int

    @property
    def did(self) -> str:
        return compute_did(self.nft, self.chain_id)


def create_data_nft(
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    name: str,
    symbol: str,
    *,
    datatoken_template: int = 1,
    cap: int = DEFAULT_CAP,
) -> DataAsset:
    """createNftWithErc20: a transferable data NFT owned by ``publisher`` and one datatoken."""
    factory = chain.contract("ERC721Factory", addresses.erc721_factory)
    nft_data = (name, symbol, 1, "https://oceanprotocol.com/nft/", True, publisher.address)
    erc_data: tuple[int, list[str], list[str], list[int], list[bytes]] = (
        datatoken_template,
        [f"{name} datatoken", f"{symbol}-DT"],
        [
            publisher.address,
            publisher.address,
            ZERO_ADDRESS,
            ZERO_ADDRESS,
        ],  # minter, payment collector, market fee
        [cap, 0],
        [],
    )
    receipt = chain.transact(publisher, factory.functions.createNftWithErc20(nft_data, erc_data))
    nft_events = factory.events.NFTCreated().process_receipt(receipt, errors=DISCARD)
    token_events = factory.events.TokenCreated().process_receipt(receipt, errors=DISCARD)
    if not nft_events or not token_events:
        raise ChainError("createNftWithErc20 emitted no NFTCreated/TokenCreated event")
    return DataAsset(
        nft=str(nft_events[0]["args"]["newTokenAddress"]),
        datatoken=str(token_events[0]["args"]["newTokenAddress"]),
        chain_id=chain.chain_id,
    )


def transfer_nft(chain: Chain, owner: LocalAccount, nft: str, to: str) -> TxReceipt:
    """Hand a data NFT to ``to``: Ocean's template gives the new owner every role and clears the old ones."""
    contract = chain.contract("ERC721Template", nft)
    return chain.transact(owner, contract.functions.transferFrom(owner.address, Web3.to_checksum_address(to), 1))


def mint_datatokens(chain: Chain, minter: LocalAccount, datatoken: str, to: str, amount: int) -> None:
    token = chain.contract("ERC20Template", datatoken)
    chain.transact(minter, token.functions.mint(Web3.to_checksum_address(to), amount))


def start_order(
    chain: Chain,
    payer: LocalAccount,
    datatoken: str,
    consumer: str,
    service_index: int,
    provider_fee: ProviderFee,
) -> tuple[str, TxReceipt]:
    """startOrder paid by ``payer`` (who needs 1 datatoken) for ``consumer``; returns (tx hash, receipt)."""
    token = chain.contract("ERC20Template", datatoken)
    call = token.functions.startOrder(
        Web3.to_checksum_address(consumer),
        service_index,
        provider_fee.as_struct(),
        (ZERO_ADDRESS, ZERO_ADDRESS, 0),
    )
    receipt = chain.transact(payer, call)
    return HexBytes(receipt["transactionHash"]).to_0x_hex(), receipt


def reuse_order(
    chain: Chain, payer: LocalAccount, datatoken: str, order_tx: str, provider_fee: ProviderFee
) -> tuple[str, TxReceipt]:
    """reuseOrder: pay a new provider fee for an existing order."""
    token = chain.contract("ERC20Template", datatoken)
    receipt = chain.transact(payer, token.functions.reuseOrder(HexBytes(order_tx), provider_fee.as_struct()))
    return HexBytes(receipt["transactionHash"]).to_0x_hex(), receipt


def decode_events(chain: Chain, datatoken: str, receipt: TxReceipt, event: str) -> list[dict[str, Any]]:
    """Args of every ``event`` (OrderStarted, OrderReused, ProviderFee) the datatoken emitted in ``receipt``."""
    token = chain.contract("ERC20Template", datatoken)
    logs = getattr(token.events, event)().process_receipt(receipt, errors=DISCARD)
    return [dict(log["args"]) for log in logs if str(log["address"]).lower() == datatoken.lower()]


def publish_ddo(
    chain: Chain,
    publisher: LocalAccount,
    nft: str,
    ddo: dict[str, Any],
    provider_url: str,
    provider_address: str,
    encryptor: Callable[[bytes], bytes] | None,
) -> TxReceipt:
    """setMetaData with the DDO lzma-compressed and, with an ``encryptor`` (the provider's /encrypt or a
    local ECIES to its key), encrypted: flags 3, exactly what ocean.py publishes."""
    import lzma

    from c2d.chain.documents import FLAG_COMPRESSED, FLAG_ENCRYPTED, ddo_bytes, ddo_hash

    data = lzma.compress(ddo_bytes(ddo))
    flags = FLAG_COMPRESSED
    if encryptor is not None:
        data = encryptor(data)
        flags |= FLAG_ENCRYPTED
    contract = chain.contract("ERC721Template", nft)
    call = contract.functions.setMetaData(
        0, provider_url, provider_address, bytes([flags]), data, ddo_hash(ddo_bytes(ddo)), []
    )
    return chain.transact(publisher, call)
