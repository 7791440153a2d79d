"""The parties of an Escrow payment on the session's anvil chain: fresh accounts, so tests share no state."""

from __future__ import annotations

import time
from dataclasses import dataclass

from eth_account import Account
from eth_account.signers.local import LocalAccount

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.chain.escrow import Escrow
from c2d.settings import Settings

OCEAN = 10**18
ETHER = 10**18


@dataclass(frozen=True)
class Parties:
    """A consumer (payer) holding OCEAN and a node wallet (payee), both with gas, and the Escrow."""

    escrow: Escrow
    ocean: str
    payer: LocalAccount
    node: LocalAccount

    def ocean_balance(self, address: str) -> int:
        return int(self.escrow.chain.contract("OceanToken", self.ocean).functions.balanceOf(address).call())


def funded_account(chain: Chain, settings: Settings, ocean: str, tokens: int = 0) -> LocalAccount:
    """A new account with 10 ETH (anvil_setBalance) and ``tokens`` OCEAN from the deployer (who minted them)."""
    account: LocalAccount = Account.create()
    chain.w3.provider.make_request("anvil_setBalance", [account.address, hex(10 * ETHER)])  # type: ignore[arg-type]
    if tokens:
        deployer: LocalAccount = Account.from_key(settings.chain.deployer_key.get_secret_value())
        token = chain.contract("OceanToken", ocean)
        chain.transact(deployer, token.functions.transfer(account.address, tokens))
    return account


def parties(chain: Chain, addresses: OceanAddresses, settings: Settings, tokens: int = 100 * OCEAN) -> Parties:
    assert addresses.escrow is not None
    return Parties(
        escrow=Escrow(chain, addresses.escrow),
        ocean=addresses.ocean,
        payer=funded_account(chain, settings, addresses.ocean, tokens),
        node=funded_account(chain, settings, addresses.ocean),
    )


def wait_past(chain: Chain, expiry: int) -> None:
    """Let wall time pass ``expiry`` and mine a block, so the chain's latest timestamp is above it."""
    while True:
        chain.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
        if int(chain.w3.eth.get_block("latest")["timestamp"]) > expiry:
            return
        time.sleep(0.25)
