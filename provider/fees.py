"""Provider fees for initializeCompute: priced per minute of validity, signed by the provider key."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal

from eth_account.signers.local import LocalAccount
from web3 import Web3

from c2d.chain.client import Chain
from c2d.chain.deploy import read_address_file
from c2d.chain.signing import ZERO_ADDRESS, ProviderFee, provider_data_bytes, sign_provider_fee
from c2d.environments import ComputeEnvironment
from c2d.settings import Settings


def fee_amount(chain: Chain, token: str, env: ComputeEnvironment, valid_until: int, now: float) -> int:
    """price per minute x minutes of validity, in the token's smallest unit; 0 for free environments."""
    if token == ZERO_ADDRESS or env.price_min == 0:
        return 0
    decimals = int(chain.contract("ERC20Template", token).functions.decimals().call())
    seconds = max(0, valid_until - int(now))
    return int(Decimal(str(env.price_min)) * seconds / 60 * (10**decimals))


@dataclass(frozen=True)
class ProviderFees:
    """The node's provider fees: in which token an environment is paid, how much a job owes, and the signed fee
    that ``initializeCompute`` hands out (signed by the provider key)."""

    chain: Chain
    default_token: str  # the Ocean token of the address file, or the zero address
    account: LocalAccount = field(repr=False)  # the provider's: it signs the fees

    @classmethod
    def create(cls, settings: Settings, chain: Chain, account: LocalAccount) -> ProviderFees:
        """Reads the address file once, at start."""
        addresses = read_address_file(settings.address_file)
        token = Web3.to_checksum_address(addresses.ocean) if addresses else ZERO_ADDRESS
        return cls(chain, token, account)

    def token(self, env: ComputeEnvironment) -> str:
        return Web3.to_checksum_address(env.fee_token) if env.fee_token else self.default_token

    def amount(self, env: ComputeEnvironment, valid_until: int, now: float) -> tuple[str, int]:
        """The token and the amount a job in ``env`` owes for fees valid until ``valid_until``."""
        token = self.token(env)
        return token, fee_amount(self.chain, token, env, valid_until, now)

    def sign(
        self, env: ComputeEnvironment, datatoken: str, service_id: str, valid_until: int, *, free: bool = False
    ) -> ProviderFee:
        """A provider fee for one service of one order; ``free``: amount 0 (the order is already paid)."""
        now = time.time()
        token, amount = (self.token(env), 0) if free else self.amount(env, valid_until, now)
        data = provider_data_bytes(env.id, now, datatoken, service_id)
        return sign_provider_fee(self.account.key.hex(), data, token, amount, valid_until)
