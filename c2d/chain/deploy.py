"""Deploy the Ocean V4 contracts the way the package's own ``scripts/deploy-contracts.js`` does.

Order for a development chain (same constructor arguments): OceanToken (+ mint to the owner),
OPFCommunityFeeCollector, FactoryRouter, FixedRateExchange, ERC20Template, ERC20TemplateEnterprise,
ERC20Template3, ERC721Template, Dispenser, ERC721Factory, then addTokenTemplate (Enterprise, Template3)
and the router's addFactory / addFixedRateContract / addDispenserContract; then Escrow(router, collector)
(contracts 2.6.0, what ocean.js pays compute jobs through; :func:`deploy_escrow`). The ve/DF/vesting contracts
of that script are not deployed: nothing in compute-to-data uses them.

The address file has the layout of the package's ``addresses/address.json`` (ocean.py reads it), under
the network name ``development``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ConfigDict, Field

from c2d.chain.client import Chain
from c2d.exceptions import ChainError

DEAD_ADDRESS = "0x000000000000000000000000000000000000dEaD"  # the script's "no pool template"
NETWORK_NAME = "development"
ONE_MILLION = 1_000_000 * 10**18


class OceanAddresses(BaseModel):
    """One network's entry of an Ocean ``address.json``."""

    model_config = ConfigDict(populate_by_name=True, extra="allow")

    chain_id: int = Field(alias="chainId")
    start_block: int = Field(alias="startBlock")
    ocean: str = Field(alias="Ocean")
    opf_community_fee_collector: str = Field(alias="OPFCommunityFeeCollector")
    router: str = Field(alias="Router")
    fixed_price: str = Field(alias="FixedPrice")
    dispenser: str = Field(alias="Dispenser")
    erc721_factory: str = Field(alias="ERC721Factory")
    erc20_templates: dict[str, str] = Field(alias="ERC20Template")
    erc721_templates: dict[str, str] = Field(alias="ERC721Template")
    escrow: str | None = Field(default=None, alias="Escrow")  # None: an address file older than Escrow


def read_address_file(path: Path, network: str = NETWORK_NAME) -> OceanAddresses | None:
    """The addresses of ``network`` in ``path``, None when the file or the entry is missing."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ChainError(f"address file {path} is unreadable: {exc}") from exc
    entry = data.get(network)
    return OceanAddresses.model_validate(entry) if entry else None


def write_address_file(path: Path, addresses: OceanAddresses, network: str = NETWORK_NAME) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[network] = addresses.model_dump(by_alias=True, exclude_none=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def is_deployed(chain: Chain, addresses: OceanAddresses) -> bool:
    """True when the address file matches this chain (same id, code at the factory and the router)."""
    return (
        addresses.chain_id == chain.chain_id
        and chain.has_code(addresses.erc721_factory)
        and chain.has_code(addresses.router)
    )


def has_escrow(chain: Chain, addresses: OceanAddresses) -> bool:
    """True when the address file names an Escrow and it has code on this chain."""
    return addresses.escrow is not None and chain.has_code(addresses.escrow)


def deploy_escrow(
    chain: Chain, owner: LocalAccount, addresses: OceanAddresses, progress: Callable[[str], None] = lambda _msg: None
) -> OceanAddresses:
    """Deploy Escrow(router, OPF collector) next to already deployed contracts; return the addresses with it.
    The claim fee (the router's ``getOPCFee(token)``, 0.1 % for OCEAN) goes to that collector."""
    progress("deploying Escrow")
    escrow = chain.deploy(owner, "Escrow", addresses.router, addresses.opf_community_fee_collector)
    return addresses.model_copy(update={"escrow": escrow})


def deploy_ocean_contracts(
    chain: Chain, owner: LocalAccount, progress: Callable[[str], None] = lambda _msg: None
) -> OceanAddresses:
    """Deploy and wire the contracts; return their addresses."""

    def deploy(name: str, *args: object) -> str:
        progress(f"deploying {name}")
        return chain.deploy(owner, name, *args)

    start_block = int(chain.w3.eth.block_number)
    ocean = deploy("OceanToken", owner.address)
    chain.transact(owner, chain.contract("OceanToken", ocean).functions.mint(owner.address, ONE_MILLION))
    collector = deploy("OPFCommunityFeeCollector", owner.address, owner.address)
    router = deploy("FactoryRouter", owner.address, ocean, DEAD_ADDRESS, collector, [])
    fixed_rate = deploy("FixedRateExchange", router)
    erc20 = deploy("ERC20Template")
    erc20_enterprise = deploy("ERC20TemplateEnterprise")
    erc20_template3 = deploy("ERC20Template3")
    erc721 = deploy("ERC721Template")
    dispenser = deploy("Dispenser", router)
    factory_address = deploy("ERC721Factory", erc721, erc20, router)

    progress("registering templates and exchanges")
    factory = chain.contract("ERC721Factory", factory_address)
    templates = {str(factory.functions.getCurrentTemplateCount().call()): erc20}
    for template in (erc20_enterprise, erc20_template3):
        chain.transact(owner, factory.functions.addTokenTemplate(template))
        templates[str(factory.functions.getCurrentTemplateCount().call())] = template
    nft_templates = {str(factory.functions.getCurrentNFTTemplateCount().call()): erc721}
    router_contract = chain.contract("FactoryRouter", router)
    chain.transact(owner, router_contract.functions.addFactory(factory_address))
    chain.transact(owner, router_contract.functions.addFixedRateContract(fixed_rate))
    chain.transact(owner, router_contract.functions.addDispenserContract(dispenser))

    deployed = OceanAddresses(
        chain_id=chain.chain_id,
        start_block=start_block,
        ocean=ocean,
        opf_community_fee_collector=collector,
        router=router,
        fixed_price=fixed_rate,
        dispenser=dispenser,
        erc721_factory=factory_address,
        erc20_templates=templates,
        erc721_templates=nft_templates,
    )
    return deploy_escrow(chain, owner, deployed, progress)
