"""Provider fees for initializeCompute: priced per minute of validity, signed by the provider key."""

from __future__ import annotations

import time
from decimal import Decimal

from web3 import Web3

from c2d.chain.client import Chain
from c2d.chain.deploy import read_address_file
from c2d.chain.signing import ZERO_ADDRESS, ProviderFee, provider_data_bytes, sign_provider_fee
from c2d.environments import ComputeEnvironment
from c2d.settings import Settings


def fee_token(settings: Settings, env: ComputeEnvironment) -> str:
    if env.fee_token:
        return Web3.to_checksum_address(env.fee_token)
    addresses = read_address_file(settings.address_file)
    return Web3.to_checksum_address(addresses.ocean) if addresses else ZERO_ADDRESS


def fee_amount(chain: Chain, token: str, env: ComputeEnvironment, valid_until: int, now: float) -> int:
    """price per minute x minutes of validity, in the token's smallest unit; 0 for free environments."""
    if token == ZERO_ADDRESS or env.price_min == 0:
        return 0
    decimals = int(chain.contract("ERC20Template", token).functions.decimals().call())
    seconds = max(0, valid_until - int(now))
    return int(Decimal(str(env.price_min)) * seconds / 60 * (10**decimals))


def make_provider_fee(
    settings: Settings,
    chain: Chain,
    env: ComputeEnvironment,
    datatoken: str,
    service_id: str,
    valid_until: int,
    *,
    free: bool = False,
) -> ProviderFee:
    now = time.time()
    token = fee_token(settings, env)
    amount = 0 if free else fee_amount(chain, token, env, valid_until, now)
    data = provider_data_bytes(env.id, now, datatoken, service_id)
    return sign_provider_fee(settings.provider.private_key.get_secret_value(), data, token, amount, valid_until)
