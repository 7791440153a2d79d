"""initializeCompute: for each input, either the order that is still valid or a signed provider fee.

The fee is charged once per job (on the first input that needs a new fee); the other inputs get a
zero fee. An order already used to start a job is not "valid" again: the client is told to reuse it
(``validOrder`` plus a new ``providerFee``: ``reuseOrder`` pays a new provider fee, no datatoken).
"""

from __future__ import annotations

import time
from typing import Any

from c2d.environments import ComputeEnvironment
from provider.assets import Asset, Service, resolve
from provider.auth import checksum
from provider.exceptions import ComputeRequestError, ProviderError
from provider.orders import validate_order
from provider.services import Services
from provider.trust import check_algorithm_allowed


def _environment(services: Services, env_id: object) -> ComputeEnvironment:
    env = services.settings.environment(str(env_id or ""))
    if env is None:
        raise ProviderError("Compute environment does not exist")
    return env


def _item(
    services: Services,
    asset: Asset,
    service: Service,
    request: dict[str, Any],
    consumer: str,
    env: ComputeEnvironment,
    valid_until: int,
    charge: bool,
    resource: str,
) -> tuple[dict[str, Any], bool]:
    """The answer for one input, and whether it carries the job's fee."""
    tx = request.get("transferTxId")
    reuse: str | None = None
    if tx:
        try:
            order = validate_order(
                services.chain,
                tx,
                asset,
                service,
                sender=consumer,
                provider_address=services.address,
                resource=resource,
                environment=env.id if service.type == "compute" else None,
                allow_expired_fee=True,
            )
        except ComputeRequestError:
            order = None
        if order is not None:
            used = services.jobs.order_used(services.chain.chain_id, order.tx)
            fee_valid = not order.fee.valid_until or order.fee.valid_until >= valid_until
            if fee_valid and not used:
                return {"validOrder": order.tx}, False
            reuse = order.start_tx
    fee = services.fees.sign(env, service.datatoken, service.id, valid_until, free=not charge)
    answer: dict[str, Any] = {"datatoken": service.datatoken, "providerFee": fee.to_wire()}
    if reuse is not None:  # the order is still good: reuseOrder pays only the new provider fee
        answer["validOrder"] = reuse
    return answer, charge


def initialize_compute(services: Services, body: dict[str, Any]) -> dict[str, Any]:
    datasets = body.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise ComputeRequestError("datasets", "missing", "datasets must be a non-empty list")
    algorithm = body.get("algorithm") or {}
    compute = body.get("compute") or {}
    consumer = checksum(body.get("consumerAddress"))
    env = _environment(services, compute.get("env"))
    try:
        valid_until = int(str(compute.get("validUntil")))
    except (TypeError, ValueError):
        raise ProviderError("The validUntil value is not correct.") from None
    if valid_until <= time.time():
        raise ProviderError("The validUntil value is not correct.")
    algo_asset = algo_service = None
    if algorithm.get("documentId"):
        algo_asset = resolve(services.ddos, algorithm["documentId"], "algorithm")
        if algo_asset.type != "algorithm":
            raise ProviderError("DID is not a valid algorithm")
        algo_service = algo_asset.service(algorithm.get("serviceId"), "algorithm")
    elif not algorithm.get("meta"):
        raise ComputeRequestError("algorithm", "missing_meta_documentId")
    answers: list[dict[str, Any]] = []
    charge = True
    for index, request in enumerate(datasets):
        resource = "dataset" if index == 0 else f"datasets[{index}]"
        asset = resolve(services.ddos, request.get("documentId"), resource)
        service = asset.service(request.get("serviceId"), resource)
        legacy = services.settings.provider.legacy_allow_any_algorithm
        check_algorithm_allowed(service, algo_asset, None, resource, legacy)
        answer, charged = _item(services, asset, service, request, consumer, env, valid_until, charge, resource)
        charge = charge and not charged
        answers.append(answer)
    result: dict[str, Any] = {"datasets": answers}
    if algo_asset is not None and algo_service is not None:
        result["algorithm"], _ = _item(
            services, algo_asset, algo_service, algorithm, consumer, env, valid_until, charge, "algorithm"
        )
    return result
