"""Provider fees for initializeCompute: priced per minute of validity, signed by the provider key."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING

from web3 import Web3

from c2d.chain.client import Chain
from c2d.chain.deploy import read_address_file
from c2d.chain.signing import ZERO_ADDRESS, ProviderFee, provider_data_bytes, sign_provider_fee
from c2d.environments import ComputeEnvironment
from c2d.settings import Settings

if TYPE_CHECKING:
    from provider.services import Services


def default_fee_token(settings: Settings) -> str:
    """The Ocean token of the address file (read once, at start), or the zero address."""
    addresses = read_address_file(settings.address_file)
    return Web3.to_checksum_address(addresses.ocean) if addresses else ZERO_ADDRESS


def fee_token(default_token: str, env: ComputeEnvironment) -> str:
    return Web3.to_checksum_address(env.fee_token) if env.fee_token else default_token


def fee_amount(chain: Chain, token: str, env: ComputeEnvironment, valid_until: int, now: float) -> int:
    """price per minute x minutes of validity, in the token's smallest unit; 0 for free environments."""
    if token == ZERO_ADDRESS or env.price_min == 0:
        return 0
    decimals = int(chain.contract("ERC20Template", token).functions.decimals().call())
    seconds = max(0, valid_until - int(now))
    return int(Decimal(str(env.price_min)) * seconds / 60 * (10**decimals))


def make_provider_fee(
    services: Services,
    env: ComputeEnvironment,
    datatoken: str,
    service_id: str,
    valid_until: int,
    *,
    free: bool = False,
) -> ProviderFee:
    now = time.time()
    token = fee_token(services.default_fee_token, env)
    amount = 0 if free else fee_amount(services.chain, token, env, valid_until, now)
    data = provider_data_bytes(env.id, now, datatoken, service_id)
    key = services.settings.provider.private_key.get_secret_value()
    return sign_provider_fee(key, data, token, amount, valid_until)
