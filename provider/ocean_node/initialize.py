"""initializeCompute in ocean-node's protocol (ocean.js 8.x): each input's order state and the escrow payment.

Per input (the algorithm first, then the datasets): ``validOrder`` is the order's transaction while the order
is valid (made out to the environment's ``consumerAddress``, i.e. this node, within the service's timeout);
otherwise a provider fee to order with. The fee's amount is 0: the compute is paid through the escrow, priced
from the resources and the longest run (``payment.amount``). Errors are ocean-node's: status and text.
"""

from __future__ import annotations

from c2d.environments import ComputeEnvironment
from c2d.exceptions import ResourceRequestError
from provider.assets import Asset, Service, resolve
from provider.auth import required_address
from provider.exceptions import ComputeRequestError, NodeProtocolError, ProviderError
from provider.models import (
    ComputeAlgorithm,
    ComputeInput,
    InitializeComputeRequest,
    NodeInitializeComputeResponse,
    NodeInitializedInput,
    PaymentQuote,
    ProviderFeeResponse,
    ResourceRequest,
)
from provider.orders import order_if_valid
from provider.services import Services
from provider.trust import check_algorithm_allowed

COMMAND = "initializeCompute"
REQUIRED = ("datasets", "algorithm", "payment", "consumerAddress", "environment")


def _fail(message: str, status: int = 500) -> NodeProtocolError:
    return NodeProtocolError(message, status, text=True)


def asked_resources(requests: list[ResourceRequest] | None) -> dict[str, float]:
    """``[{id, amount}]`` as a mapping; a malformed entry is refused (ocean-node's message)."""
    asked: dict[str, float] = {}
    for request in requests or []:
        if not request.id or request.amount is None:
            raise ResourceRequestError("Each resource needs an id and an amount")
        asked[request.id] = float(request.amount)
    return asked


def _missing(request: InitializeComputeRequest) -> str | None:
    values = {
        "datasets": request.datasets or [],  # ocean-node's route reads a missing list as empty
        "algorithm": request.algorithm,
        "payment": request.payment,
        "consumerAddress": request.consumer_address,
        "environment": request.environment,
    }
    return next((name for name in REQUIRED if values[name] is None), None)


def _input_answer(
    services: Services,
    env: ComputeEnvironment,
    asset: Asset,
    service: Service,
    request: ComputeInput,
    parties: tuple[str, str],
    resource: str,
) -> NodeInitializedInput:
    """``parties``: the consumer asking, and the address orders are made out to (the environment's)."""
    consumer, made_out_to = parties
    answer = NodeInitializedInput(
        did=asset.did,
        service_id=service.id,
        datatoken=service.datatoken,
        chain_id=int(asset.ddo.get("chainId") or services.chain.chain_id),
        consumer_address=made_out_to,
    )
    if request.transfer_tx_id:
        order = order_if_valid(
            services.chain,
            request.transfer_tx_id,
            asset,
            service,
            sender=consumer,
            provider_address=services.address,
            resource=resource,
            environment=env.id if service.type == "compute" else None,
            made_out_to=made_out_to,
        )
        if order is not None:
            return answer.model_copy(update={"valid_order": order.tx})
    fee = services.fees.sign(env, service.datatoken, service.id, 0, free=True)
    return answer.model_copy(update={"provider_fee": ProviderFeeResponse.model_validate(fee.to_wire())})


def initialize_node_compute(services: Services, request: InitializeComputeRequest) -> NodeInitializeComputeResponse:
    """ocean-node's initializeCompute; raises :class:`NodeProtocolError` with ocean-node's status and message."""
    missing = _missing(request)
    if missing:
        raise NodeProtocolError.missing(missing, COMMAND, REQUIRED, text=True)
    try:
        consumer = required_address(request.consumer_address)
    except ProviderError:
        raise _fail('Parameter : "consumerAddress" is not a valid web3 address', 400) from None
    payment = request.payment
    if payment is None or not payment.chain_id or not payment.token:
        raise _fail("Invalid payment options", 400)
    if request.max_job_duration is not None and request.max_job_duration <= 0:
        raise _fail("Invalid maxJobDuration", 400)
    env = services.settings.environment(request.environment or "")
    if env is None:
        raise _fail("Invalid C2D Environment")
    duration = int(min(request.max_job_duration or env.max_job_duration, env.max_job_duration))
    try:
        amounts = env.job_resources(asked_resources(payment.resources))
    except ResourceRequestError as exc:
        raise _fail(f"Error: {exc}") from None
    try:
        token, escrow = services.payments.accepted(env, payment.chain_id, payment.token)
    except NodeProtocolError as exc:
        raise NodeProtocolError.of(exc, text=True) from None
    queue_wait = max(0.0, request.queue_max_wait_time or 0.0)
    quote = PaymentQuote(
        escrow_address=escrow.address,
        chain_id=payment.chain_id,
        payee=services.payee(env),
        token=token,
        amount=str(services.payments.job_cost(env, token, amounts, duration)),
        min_lock_seconds=services.payments.min_lock_seconds(duration, queue_wait),
    )
    parties = (consumer, services.payee(env))
    algorithm = request.algorithm or ComputeAlgorithm()
    try:
        algo_answer, datasets = _inputs(services, env, algorithm, request.datasets or [], parties)
    except NodeProtocolError:
        raise
    except ProviderError as exc:
        raise NodeProtocolError.of(exc, text=True) from None
    return NodeInitializeComputeResponse(algorithm=algo_answer, datasets=datasets, payment=quote)


def _inputs(
    services: Services,
    env: ComputeEnvironment,
    algorithm: ComputeAlgorithm,
    datasets: list[ComputeInput],
    parties: tuple[str, str],
) -> tuple[NodeInitializedInput, list[NodeInitializedInput]]:
    algo_asset = algo_answer = None
    if algorithm.document_id:
        algo_asset = resolve(services.ddos, algorithm.document_id, "algorithm")
        if algo_asset.type != "algorithm":
            raise _fail(f"DID {algo_asset.did} is not an algorithm", 400)
        service = algo_asset.service(algorithm.service_id, "algorithm")
        algo_answer = _input_answer(services, env, algo_asset, service, algorithm, parties, "algorithm")
    elif not algorithm.meta:
        raise _fail("Missing algorithm", 400)
    answers = []
    legacy = services.settings.provider.legacy_allow_any_algorithm
    for index, dataset in enumerate(datasets):
        resource = "dataset" if index == 0 else f"datasets[{index}]"
        if not dataset.document_id:
            raise _fail("Missing dataset did", 400)
        asset = resolve(services.ddos, dataset.document_id, resource)
        service = asset.service(dataset.service_id, resource)
        try:
            check_algorithm_allowed(service, algo_asset, None, resource, legacy)
        except ComputeRequestError:
            name = algorithm.document_id or "(raw algorithm)"
            raise _fail(f"Algorithm {name} not allowed to run on the dataset: {asset.did}", 400) from None
        answers.append(_input_answer(services, env, asset, service, dataset, parties, resource))
    return algo_answer or NodeInitializedInput(), answers
