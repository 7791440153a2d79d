"""Validate an order transaction on chain the way Ocean's provider does (§2.1 of the notes), stricter
where it matters: the provider fee must be unexpired and signed by us, and an order starts one job.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import TransactionNotFound

from c2d.chain.client import Chain
from c2d.chain.signing import ProviderFee, provider_fee_signer
from c2d.chain.transactions import ONE_TOKEN, decode_events
from provider.assets import Asset, Service
from provider.exceptions import ComputeRequestError


@dataclass(frozen=True)
class ValidOrder:
    tx: str
    start_tx: str
    consumer: str
    payer: str
    fee: ProviderFee


def _fail(resource: str, reason: str, code: str = "order_invalid") -> ComputeRequestError:
    return ComputeRequestError(f"{resource}.serviceId" if resource != "algorithm" else resource, code, reason)


def _receipt(chain: Chain, tx: str, resource: str) -> Any:
    try:
        receipt = chain.w3.eth.get_transaction_receipt(HexBytes(tx))
    except (TransactionNotFound, ValueError):
        raise _fail(resource, f"order transaction {tx} not found on chain {chain.chain_id}") from None
    if receipt["status"] != 1:
        raise _fail(resource, "order transaction failed")
    return receipt


def _provider_fee(args: dict[str, Any]) -> ProviderFee:
    return ProviderFee(
        provider_fee_address=str(args["providerFeeAddress"]),
        provider_fee_token=str(args["providerFeeToken"]),
        provider_fee_amount=int(args["providerFeeAmount"]),
        provider_data=bytes(args["providerData"]),
        v=int(args["v"]),
        r=bytes(args["r"]),
        s=bytes(args["s"]),
        valid_until=int(args["validUntil"]),
    )


def validate_order(
    chain: Chain,
    tx: str | None,
    asset: Asset,
    service: Service,
    *,
    sender: str,
    provider_address: str,
    resource: str,
    environment: str | None = None,
    now: float | None = None,
    allow_expired_fee: bool = False,
    made_out_to: str | None = None,
) -> ValidOrder:
    """The order ``tx`` of ``service``, checked; raises :class:`ComputeRequestError` naming what fails.

    Whose order it is: by default (Provider v2.1) ``sender`` made it or it was made out to ``sender``. With
    ``made_out_to`` (ocean-node: orders are made out to the environment's address, the node), it must be made
    out to that address *and* paid by ``sender``: an order someone else paid for does not open the data to
    ``sender`` (ocean-node accepts any order made out to the node; this is stricter)."""
    if not tx:
        raise ComputeRequestError(f"{resource}.transferTxId", "missing")
    now = time.time() if now is None else now
    nft = chain.contract("ERC721Template", asset.nft)
    if not nft.functions.isDeployed(service.datatoken).call():
        raise _fail(resource, f"datatoken {service.datatoken} is not deployed by {asset.nft}")
    receipt = _receipt(chain, tx, resource)
    fee = None
    for args in decode_events(chain, service.datatoken, receipt, "ProviderFee"):
        candidate = _provider_fee(args)
        try:
            data = json.loads(candidate.provider_data)
        except ValueError:
            continue
        if str(data.get("dt", "")).lower() == service.datatoken.lower() and str(data.get("id", "")) == service.id:
            fee = candidate
            break
    if fee is None:
        raise _fail(resource, "no provider fee for this service in the order transaction")
    if environment is not None and fee.data.get("environment") != environment:
        raise _fail(
            resource, f"the order was made for environment {fee.data.get('environment')!r}, not {environment!r}"
        )
    if Web3.to_checksum_address(fee.provider_fee_address) != provider_address:
        raise _fail(resource, "the provider fee is payable to another provider")
    if provider_fee_signer(fee) != provider_address:
        raise _fail(resource, "the provider fee was not signed by this provider")
    if fee.valid_until and now > fee.valid_until and not allow_expired_fee:
        raise _fail(resource, f"the provider fee expired at {fee.valid_until}", "provider_fee_expired")
    start_tx = HexBytes(tx).to_0x_hex()
    order_time: float | None = None
    reused = decode_events(chain, service.datatoken, receipt, "OrderReused")
    if reused:
        start_tx = HexBytes(reused[0]["orderTxId"]).to_0x_hex()
        order_time = float(reused[0]["timestamp"])
        receipt = _receipt(chain, start_tx, resource)
    started = [
        e
        for e in decode_events(chain, service.datatoken, receipt, "OrderStarted")
        if int(e["serviceIndex"]) == service.index
    ]
    if not started:
        raise _fail(resource, f"no OrderStarted event for service index {service.index}")
    order = started[0]
    if int(order["amount"]) < ONE_TOKEN:
        raise _fail(resource, "the order paid less than one datatoken")
    order_time = order_time if order_time is not None else float(order["timestamp"])
    if service.timeout and now - order_time > service.timeout:
        raise _fail(resource, "the order has expired")
    consumer, payer = Web3.to_checksum_address(order["consumer"]), Web3.to_checksum_address(order["payer"])
    if made_out_to is not None:
        if consumer != Web3.to_checksum_address(made_out_to) or payer != sender:
            raise _fail(resource, f"the order was paid by {payer} for {consumer}, not by {sender} for {made_out_to}")
    elif sender not in (consumer, payer):
        raise _fail(resource, f"the order was made by {payer} for {consumer}, not for {sender}")
    return ValidOrder(HexBytes(tx).to_0x_hex(), start_tx, consumer, payer, fee)


def order_if_valid(
    chain: Chain,
    tx: str,
    asset: Asset,
    service: Service,
    *,
    sender: str,
    provider_address: str,
    resource: str,
    environment: str | None,
    made_out_to: str | None = None,
) -> ValidOrder | None:
    """For initializeCompute: the order ``tx`` when it still holds (:func:`validate_order`; its provider fee may
    have expired, a new one is then offered), else None."""
    try:
        return validate_order(
            chain,
            tx,
            asset,
            service,
            sender=sender,
            provider_address=provider_address,
            resource=resource,
            environment=environment,
            allow_expired_fee=True,
            made_out_to=made_out_to,
        )
    except ComputeRequestError:
        return None
