"""The real Ocean contracts on the embedded anvil chain: deployed, an NFT + datatoken, an order."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes

from c2d.chain.artifacts import Artifacts
from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses, read_address_file, write_address_file
from c2d.chain.signing import (
    ZERO_ADDRESS,
    ProviderFee,
    provider_data_bytes,
    provider_fee_signer,
    sign_provider_fee,
)
from c2d.chain.transactions import (
    ONE_TOKEN,
    compute_did,
    create_data_nft,
    decode_events,
    mint_datatokens,
    start_order,
)
from c2d.exceptions import ChainError
from c2d.settings import Settings
from c2d.stack.anvil import OceanContracts


def test_every_contract_of_the_address_file_is_on_the_chain(
    chain: Chain, addresses: OceanAddresses, settings: Settings
) -> None:
    assert addresses.chain_id == settings.chain.chain_id == chain.chain_id
    for address in (
        addresses.ocean,
        addresses.router,
        addresses.fixed_price,
        addresses.dispenser,
        addresses.erc721_factory,
        *addresses.erc20_templates.values(),
        *addresses.erc721_templates.values(),
    ):
        assert chain.has_code(address), address
    factory = chain.contract("ERC721Factory", addresses.erc721_factory)
    assert factory.functions.getCurrentTemplateCount().call() == 3
    assert factory.functions.getTokenTemplate(2).call()[0] == addresses.erc20_templates["2"]
    router = chain.contract("FactoryRouter", addresses.router)
    assert router.functions.isFixedRateContract(addresses.fixed_price).call()
    assert router.functions.isDispenserContract(addresses.dispenser).call()
    # ocean.py reads this file: network "development", template maps keyed by index strings.
    data = json.loads(settings.address_file.read_text())
    assert set(data) == {"development"} and data["development"]["ERC20Template"]["1"]
    # ocean.js / ocean-node read "Escrow" from the same entry
    assert data["development"]["Escrow"] == addresses.escrow


def test_escrow_is_deployed_on_our_router_and_fee_collector(
    chain: Chain, addresses: OceanAddresses, settings: Settings
) -> None:
    assert addresses.escrow is not None and chain.has_code(addresses.escrow)
    escrow = chain.contract("Escrow", addresses.escrow)
    assert escrow.functions.factoryRouter().call() == addresses.router
    assert escrow.functions.opcCollector().call() == addresses.opf_community_fee_collector
    # what _claimLock asks the 2.0.3 router: 0.1 % on OCEAN (an approved token), its collector
    router = chain.contract("FactoryRouter", addresses.router)
    assert router.functions.getOPCFee(addresses.ocean).call() == 10**15
    assert router.functions.getOPCCollector().call() == addresses.opf_community_fee_collector
    artifacts = Artifacts(settings.npm_dir)
    assert artifacts.version == "2.0.3"  # the rest stays what ocean.py 3.1.2 knows
    escrow_package = json.loads((settings.npm_dir / "@oceanprotocol/contracts-escrow/package.json").read_text())
    assert escrow_package["version"] == "2.6.0"


def test_an_address_file_from_before_escrow_gets_only_escrow(
    chain: Chain, addresses: OceanAddresses, settings: Settings, tmp_path: Path
) -> None:
    older = tmp_path / "address.json"
    write_address_file(older, addresses.model_copy(update={"escrow": None}))
    assert "Escrow" not in json.loads(older.read_text())["development"]
    assert read_address_file(older) == addresses.model_copy(update={"escrow": None})
    steps: list[str] = []
    moved = settings.model_copy(update={"chain": settings.chain.model_copy(update={"address_file": older})})
    contracts = OceanContracts(moved, steps.append)

    contracts.start()
    added = read_address_file(older)
    assert steps == ["deploying Escrow"]  # nothing else redeployed
    assert added is not None and added.escrow not in (None, addresses.escrow) and chain.has_code(added.escrow)
    assert added.model_copy(update={"escrow": addresses.escrow}) == addresses
    assert "Escrow 0x" in contracts.check()

    contracts.start()  # now complete: nothing to do
    assert steps == ["deploying Escrow"] and read_address_file(older) == added


def _fee(provider: LocalAccount, datatoken: str, valid_for: int = 600) -> ProviderFee:
    data = provider_data_bytes("env-1", time.time(), datatoken, "svc-compute")
    return sign_provider_fee(HexBytes(provider.key).to_0x_hex(), data, ZERO_ADDRESS, 0, int(time.time()) + valid_for)


def test_create_nft_and_datatoken_then_start_an_order_and_read_its_events(
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    consumer: LocalAccount,
    provider_account: LocalAccount,
) -> None:
    asset = create_data_nft(chain, addresses, publisher, "Sample data", "SD")
    assert asset.did == compute_did(asset.nft.lower(), chain.chain_id) and asset.did.startswith("did:op:")
    nft = chain.contract("ERC721Template", asset.nft)
    assert nft.functions.isDeployed(asset.datatoken).call()
    assert chain.contract("ERC721Factory", addresses.erc721_factory).functions.erc721List(asset.nft).call() == asset.nft

    mint_datatokens(chain, publisher, asset.datatoken, consumer.address, 2 * ONE_TOKEN)
    fee = _fee(provider_account, asset.datatoken)
    env_consumer = "0x" + "42" * 20
    tx_hash, receipt = start_order(chain, consumer, asset.datatoken, env_consumer, 0, fee)

    started = decode_events(chain, asset.datatoken, receipt, "OrderStarted")
    assert len(started) == 1
    assert started[0]["consumer"].lower() == env_consumer
    assert started[0]["payer"] == consumer.address
    assert started[0]["amount"] == ONE_TOKEN
    assert started[0]["serviceIndex"] == 0
    fees = decode_events(chain, asset.datatoken, receipt, "ProviderFee")
    assert len(fees) == 1
    on_chain = ProviderFee(
        provider_fee_address=fees[0]["providerFeeAddress"],
        provider_fee_token=fees[0]["providerFeeToken"],
        provider_fee_amount=fees[0]["providerFeeAmount"],
        provider_data=fees[0]["providerData"],
        v=fees[0]["v"],
        r=fees[0]["r"],
        s=fees[0]["s"],
        valid_until=fees[0]["validUntil"],
    )
    assert provider_fee_signer(on_chain) == provider_account.address
    assert on_chain.data["dt"] == asset.datatoken and on_chain.data["environment"] == "env-1"
    assert chain.contract("ERC20Template", asset.datatoken).functions.balanceOf(consumer.address).call() == ONE_TOKEN
    assert tx_hash.startswith("0x") and len(tx_hash) == 66


def test_the_chain_rejects_a_forged_provider_fee(
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    consumer: LocalAccount,
    provider_account: LocalAccount,
) -> None:
    asset = create_data_nft(chain, addresses, publisher, "Forged", "FG")
    mint_datatokens(chain, publisher, asset.datatoken, consumer.address, ONE_TOKEN)
    fee = _fee(provider_account, asset.datatoken)
    forged = ProviderFee(**{**fee.__dict__, "valid_until": fee.valid_until + 1})  # signature no longer matches
    with pytest.raises(ChainError, match="Invalid provider fee"):
        start_order(chain, consumer, asset.datatoken, consumer.address, 0, forged)


def test_the_chain_id_is_asked_of_the_endpoint_once(chain: Chain, settings: Settings) -> None:
    fresh = Chain(chain.rpc_url, chain.artifacts)
    asked: list[str] = []
    send = fresh.w3.provider.make_request

    def counted(method: Any, params: Any) -> Any:
        asked.append(str(method))
        return send(method, params)

    fresh.w3.provider.make_request = counted  # type: ignore[method-assign]
    assert [fresh.chain_id for _ in range(3)] == [settings.chain.chain_id] * 3
    assert asked.count("eth_chainId") == 1, asked
