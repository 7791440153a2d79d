"""POST /compute: validate every input and order on chain, then queue the job with its Workflow.

Nothing is started unless everything holds: signature and nonce, environment, DDOs, services,
decryptable files, trusted algorithm, orders (ours, unexpired, for this consumer and environment, paid
enough), container. The orders are claimed in the same transaction that creates the job, so an order
starts at most one job even under concurrent requests.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from c2d.db.job_records import JobDetails, OutputRequest
from c2d.db.jobs import JobRecord, NewJob, UsedOrder
from c2d.environments import ComputeEnvironment
from c2d.exceptions import OrderAlreadyUsedError, UnsupportedImageError
from c2d.settings import EngineSettings, Settings
from c2d.storage.locations import LocationError, scheme_of
from provider.assets import Asset, Service, files_checksum, resolve, service_files
from provider.auth import required_address, verify_request
from provider.exceptions import ComputeRequestError, ProviderError
from provider.fees import ProviderFees
from provider.input_files import input_file, node_sources, store_access
from provider.models import AlgorithmMeta, ComputeAlgorithm, ComputeInput, ComputeStartRequest, ComputeStatus
from provider.orders import ValidOrder, validate_order
from provider.result_assets import output_request
from provider.services import Services
from provider.status_object import status_object
from provider.trust import check_algorithm_allowed
from workflows.builder import build_workflow
from workflows.registry import BuildOptions
from workflows.spec import AlgorithmContainer, AlgorithmInput, DatasetInput, FetchSpec, InputFile, JobSpec


@dataclass
class CheckedAlgorithm:
    spec: AlgorithmInput
    container: AlgorithmContainer
    service: Service | None = None  # a published algorithm's service, and the order the request names for it
    transfer_tx: str | None = None
    order: ValidOrder | None = None  # checked after the datasets' orders, as Ocean's provider does


def _container(raw: dict[str, Any], engine: EngineSettings) -> AlgorithmContainer:
    """The algorithm's container section, checked; on the local engine, its image must have a runtime."""
    missing = [key for key in ("entrypoint", "image", "tag") if not raw.get(key)]
    if missing:
        raise ComputeRequestError("algorithm.container", "missing_entrypoint_image_checksum", f"missing {missing}")
    checksum_value = raw.get("checksum") or None
    if checksum_value is not None and not str(checksum_value).startswith("sha256:"):
        raise ComputeRequestError("algorithm.container", "checksum_prefix", "checksum must start with sha256:")
    try:
        container = AlgorithmContainer(
            image=str(raw["image"]),
            tag=str(raw["tag"]),
            entrypoint=str(raw["entrypoint"]),
            checksum=str(checksum_value) if checksum_value else None,
        )
    except ValueError as exc:
        raise ComputeRequestError("algorithm.container", "invalid", str(exc).splitlines()[0]) from None
    if engine.kind == "local":
        try:
            engine.runtime_for(container.image)
        except UnsupportedImageError as exc:
            raise ComputeRequestError("algorithm.container", "image_not_supported", str(exc)) from None
    return container


def _raw_files(meta: AlgorithmMeta) -> list[InputFile]:
    """A raw algorithm's ``url``: http(s) only (a consumer may not name the node's buckets or IPFS)."""
    if meta.rawcode:
        return []
    url = str(meta.url)
    try:
        if scheme_of(url) not in ("http", "https"):
            raise ComputeRequestError("algorithm", "unsupported_file_type", "a raw algorithm url must be http(s)")
        return [InputFile(url=url)]
    except (LocationError, ValueError) as exc:
        raise ComputeRequestError("algorithm", "unsupported_file_type", str(exc).splitlines()[0]) from None


def checked_algorithm(
    services: Services, algo: ComputeAlgorithm, *, published_first: bool = False
) -> tuple[CheckedAlgorithm, Asset | None, list[InputFile]]:
    """The algorithm of a start request, resolved and checked but for its order (checked after the datasets').
    ``published_first``: a ``documentId`` wins over ``meta`` (ocean.js sends a published algorithm's metadata
    as ``meta``); otherwise ``meta`` makes it a raw algorithm (Provider v2.1)."""
    meta = algo.meta
    custom = algo.algocustomdata
    if meta and not (published_first and algo.document_id):
        if not (meta.rawcode or meta.url):
            raise ComputeRequestError("algorithm", "meta_oneof_url_rawcode_remote")
        spec = AlgorithmInput(raw_code=meta.rawcode or None, files=_raw_files(meta), custom_data=custom)
        container = meta.container.model_dump() if meta.container else {}  # checked as a DDO's container is
        return CheckedAlgorithm(spec, _container(container, services.settings.engine)), None, []
    if not algo.document_id:
        raise ComputeRequestError("algorithm", "missing_meta_documentId")
    asset = resolve(services.ddos, algo.document_id, "algorithm")
    if asset.type != "algorithm":
        raise ComputeRequestError("algorithm", "not_algo", f"{asset.did} is a {asset.type or 'typeless'} asset")
    if not algo.service_id:
        raise ComputeRequestError("algorithm.serviceId", "missing")
    service = asset.service(algo.service_id, "algorithm")
    raw = service_files(asset, service, services.account.key.hex(), "algorithm")
    results_of = services.jobs.result_asset_job(asset.did)
    files = [input_file(services.settings, file, asset.owner, "algorithm", results_of) for file in raw]
    spec = AlgorithmInput(did=asset.did, files=files, ddo=asset.ddo, custom_data=custom)
    checked = _container(asset.container, services.settings.engine)
    return CheckedAlgorithm(spec, checked, service, algo.transfer_tx_id), asset, files


@dataclass(frozen=True)
class OrderRule:
    """How a job's orders are checked: whose they are (``consumer``'s; with ``made_out_to``, paid by the consumer
    for that address: see :func:`provider.orders.validate_order`), for ``environment`` (the provider fee names
    it), and whether an expired provider fee still counts (ocean-node does not re-check the fee at start)."""

    consumer: str
    environment: str | None
    allow_expired_fee: bool = False
    made_out_to: str | None = None


def checked_inputs(
    services: Services,
    requests: list[ComputeInput],
    algorithm: CheckedAlgorithm,
    algo_asset: Asset | None,
    algo_files: list[InputFile],
    orders: OrderRule | None,
) -> tuple[list[DatasetInput], list[tuple[str, ValidOrder]]]:
    """Each dataset resolved, decryptable, trusting the algorithm, and (unless ``orders`` is None: a free job) its
    order valid, then the algorithm's order; raises on the first that fails."""
    checksum_cache: list[str] = []

    def algo_checksum() -> str:
        if not checksum_cache:
            checksum_cache.append(files_checksum(algo_files, node_sources(services.settings)))
        return checksum_cache[0]

    inputs: list[DatasetInput] = []
    valid: list[tuple[str, ValidOrder]] = []
    for index, request in enumerate(requests):
        resource = "dataset" if index == 0 else f"datasets[{index}]"
        asset = resolve(services.ddos, request.document_id, resource)
        service = asset.service(request.service_id, resource)
        if index == 0 and service.type != "compute":
            raise ComputeRequestError(f"{resource}.serviceId", "main_service_compute")
        if service.type not in ("compute", "access"):
            raise ComputeRequestError(f"{resource}.serviceId", "service_not_access_compute")
        raw = service_files(asset, service, services.account.key.hex(), resource)
        results_of = services.jobs.result_asset_job(asset.did)
        files = [input_file(services.settings, file, asset.owner, resource, results_of) for file in raw]
        legacy = services.settings.provider.legacy_allow_any_algorithm
        check_algorithm_allowed(service, algo_asset, algo_checksum, resource, legacy)
        if orders is not None:
            order = validate_order(
                services.chain,
                request.transfer_tx_id,
                asset,
                service,
                sender=orders.consumer,
                provider_address=services.address,
                resource=resource,
                environment=orders.environment,
                allow_expired_fee=orders.allow_expired_fee,
                made_out_to=orders.made_out_to,
            )
            valid.append(("dataset", order))
        inputs.append(DatasetInput(did=asset.did, files=files, ddo=asset.ddo))
    if orders is not None and algo_asset is not None and algorithm.service is not None:
        algorithm.order = validate_order(
            services.chain,
            algorithm.transfer_tx,
            algo_asset,
            algorithm.service,
            sender=orders.consumer,
            provider_address=services.address,
            resource="algorithm",
            allow_expired_fee=orders.allow_expired_fee,
            made_out_to=orders.made_out_to,
        )
        valid.append(("algorithm", algorithm.order))
    return inputs, valid


def start_compute(services: Services, body: ComputeStartRequest) -> list[ComputeStatus]:
    """Provider v2.1's start (ocean.py): one order per input, the compute paid by the order's provider fee."""
    dataset = body.dataset or ComputeInput()
    consumer = required_address(body.consumer_address)
    verify_request(
        services.nonces,
        consumer,
        f"{consumer}{dataset.document_id or ''}",
        body.nonce,
        body.signature,
    )
    env = services.settings.environment(body.environment or "")
    if env is None:
        raise ProviderError("Environment invalid or does not exist")
    extra = _additional_datasets(body)
    output = _output(services.settings, env, body.output)
    algorithm, algo_asset, algo_files = checked_algorithm(services, body.algorithm or ComputeAlgorithm())
    rule = OrderRule(consumer, env.id)
    inputs, orders = checked_inputs(services, [dataset, *extra], algorithm, algo_asset, algo_files, rule)
    _check_fees(services.fees, env, [order for _, order in orders])
    details = JobDetails(output=output) if output else JobDetails()
    claimed = [UsedOrder(services.chain.chain_id, order.tx, role) for role, order in orders]
    job = create_job(services, env, consumer, inputs, algorithm, orders, details, claimed)
    return [status_object(job, signed=True)]  # the request was signed by the consumer


def _additional_datasets(body: ComputeStartRequest) -> list[ComputeInput]:
    """The job's other datasets: ``additionalDatasets`` (Ocean's provider) or ``additionalInputs`` (what ocean.py
    sends); both may be given only when they name the same ones."""
    datasets, inputs = body.additional_datasets or [], body.additional_inputs or []
    if datasets and inputs and datasets != inputs:
        raise ComputeRequestError(
            "additionalDatasets", "conflict", "additionalDatasets and additionalInputs name different datasets"
        )
    return datasets or inputs


def _output(settings: Settings, env: ComputeEnvironment, raw: object) -> OutputRequest | None:
    """``output``: publishing the results as a new asset needs them in S3 or IPFS (not the node's disk)."""
    try:
        output = output_request(raw)
    except ValueError as exc:
        raise ComputeRequestError("output", "invalid", str(exc)) from None
    if output and settings.result_storage(env) not in ("s3", "ipfs"):
        raise ComputeRequestError(
            "output", "publish_output_not_supported", f"environment {env.id!r} does not store results in S3 or IPFS"
        )
    return output


def _check_fees(fees: ProviderFees, env: ComputeEnvironment, orders: list[ValidOrder]) -> None:
    valid_until = max((order.fee.valid_until for order in orders), default=0)
    token, required = fees.amount(env, valid_until, time.time())
    if not any(order.fee.provider_fee_amount >= required and order.fee.provider_fee_token == token for order in orders):
        raise ComputeRequestError("order", "fees_not_paid", f"{required} of {token} required")


def create_job(
    services: Services,
    env: ComputeEnvironment,
    consumer: str,
    inputs: list[DatasetInput],
    algorithm: CheckedAlgorithm,
    orders: list[tuple[str, ValidOrder]],
    details: JobDetails,
    claimed: list[UsedOrder],
    job_id: str | None = None,
) -> JobRecord:
    """Queue the job (``env`` as the engines must enforce it) with its Workflow; the ``claimed`` orders are
    marked used in the same transaction (one order, one job), so a used one raises ``order_already_used``."""
    settings = services.settings
    job_id = job_id or new_job_id()
    spec = JobSpec(
        job_id=job_id,
        owner=consumer,
        environment=env.id,
        container=algorithm.container,
        fetch=FetchSpec(
            datasets=inputs, algorithm=algorithm.spec, max_bytes=env.disk_bytes, access=store_access(settings)
        ),
    )
    options = BuildOptions.for_job(settings, env, job_id)
    workflow = build_workflow(spec, env, services.registry, options)
    chain_id = services.chain.chain_id
    try:
        job = services.jobs.create(
            NewJob(
                job_id=job_id,
                owner=consumer,
                environment=env.id,
                engine=settings.engine.kind,
                did=inputs[0].did if inputs else None,
                input_dids=[i.did for i in inputs],
                algo_did=algorithm.spec.did or "raw",
                agreement_id=orders[0][1].tx if orders else None,
                chain_id=chain_id,
                workflow_name=spec.workflow_name,
                workflow=workflow.to_dict(),
                expiry=datetime.now(UTC) + timedelta(seconds=env.storage_expiry),
                details=details,
            ),
            claimed,
        )
    except OrderAlreadyUsedError as exc:
        raise ComputeRequestError("order", "order_already_used", str(exc)) from None
    services.statuses.drop(consumer)
    if services.engine is not None:
        services.engine.wake()
    return job


def new_job_id() -> str:
    return secrets.token_hex(16)
