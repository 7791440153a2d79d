"""initializeCompute: for each input, either the order that is still valid or a signed provider fee.

The fee is charged once per job (on the first input that needs a new fee); the other inputs get a
zero fee. An order already used to start a job is not "valid" again: the client is told to reuse it
(``validOrder`` plus a new ``providerFee``: ``reuseOrder`` pays a new provider fee, no datatoken).
"""

from __future__ import annotations

import time

from c2d.environments import ComputeEnvironment
from c2d.settings import Settings
from provider.assets import Asset, Service, resolve
from provider.auth import required_address
from provider.exceptions import ComputeRequestError, ProviderError
from provider.models import (
    ComputeAlgorithm,
    ComputeInput,
    ComputeParams,
    InitializeComputeRequest,
    InitializeComputeResponse,
    InitializedInput,
    ProviderFeeResponse,
)
from provider.orders import order_if_valid
from provider.services import Services
from provider.trust import check_algorithm_allowed


def _environment(settings: Settings, env_id: object) -> ComputeEnvironment:
    env = settings.environment(str(env_id or ""))
    if env is None:
        raise ProviderError("Compute environment does not exist")
    return env


def _initialize_input(
    services: Services,
    asset: Asset,
    service: Service,
    request: ComputeInput,
    consumer: str,
    env: ComputeEnvironment,
    valid_until: int,
    charge: bool,
    resource: str,
) -> tuple[InitializedInput, bool]:
    """The answer for one input, and whether it carries the job's fee."""
    tx = request.transfer_tx_id
    reuse: str | None = None
    if tx:
        order = order_if_valid(
            services.chain,
            tx,
            asset,
            service,
            sender=consumer,
            provider_address=services.address,
            resource=resource,
            environment=env.id if service.type == "compute" else None,
        )
        if order is not None:
            used = services.jobs.order_used(services.chain.chain_id, order.tx)
            fee_valid = not order.fee.valid_until or order.fee.valid_until >= valid_until
            if fee_valid and not used:
                return InitializedInput(valid_order=order.tx), False
            reuse = order.start_tx
    fee = services.fees.sign(env, service.datatoken, service.id, valid_until, free=not charge)
    # with validOrder when the order is still good: reuseOrder then pays only the new provider fee
    answer = InitializedInput(
        datatoken=service.datatoken, provider_fee=ProviderFeeResponse.model_validate(fee.to_wire()), valid_order=reuse
    )
    return answer, charge


def initialize_compute(services: Services, request: InitializeComputeRequest) -> InitializeComputeResponse:
    """The answer for each dataset and a published algorithm. Raises Ocean's errors for a missing or
    unknown input, environment, consumer or ``validUntil`` (not in the future), and an untrusted algorithm."""
    datasets = request.datasets
    if not datasets:
        raise ComputeRequestError("datasets", "missing", "datasets must be a non-empty list")
    algorithm = request.algorithm or ComputeAlgorithm()
    compute = request.compute or ComputeParams()
    consumer = required_address(request.consumer_address)
    env = _environment(services.settings, compute.env)
    try:
        valid_until = int(compute.valid_until or "")
    except ValueError:
        raise ProviderError("The validUntil value is not correct.") from None
    if valid_until <= time.time():
        raise ProviderError("The validUntil value is not correct.")
    algo_asset = algo_service = None
    if algorithm.document_id:
        algo_asset = resolve(services.ddos, algorithm.document_id, "algorithm")
        if algo_asset.type != "algorithm":
            raise ProviderError("DID is not a valid algorithm")
        algo_service = algo_asset.service(algorithm.service_id, "algorithm")
    elif not algorithm.meta:
        raise ComputeRequestError("algorithm", "missing_meta_documentId")
    answers: list[InitializedInput] = []
    charge = True
    for index, dataset in enumerate(datasets):
        resource = "dataset" if index == 0 else f"datasets[{index}]"
        asset = resolve(services.ddos, dataset.document_id, resource)
        service = asset.service(dataset.service_id, resource)
        legacy = services.settings.provider.legacy_allow_any_algorithm
        check_algorithm_allowed(service, algo_asset, None, resource, legacy)
        answer, charged = _initialize_input(
            services, asset, service, dataset, consumer, env, valid_until, charge, resource
        )
        charge = charge and not charged
        answers.append(answer)
    algo_answer = None
    if algo_asset is not None and algo_service is not None:
        algo_answer, _ = _initialize_input(
            services, algo_asset, algo_service, algorithm, consumer, env, valid_until, charge, "algorithm"
        )
    return InitializeComputeResponse(datasets=answers, algorithm=algo_answer)
