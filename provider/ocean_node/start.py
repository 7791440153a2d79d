"""Job starts in ocean-node's protocol (ocean.js 8.x): ``POST /compute`` (escrow-paid) and ``POST /freeCompute``.

Both are signed over ``consumerAddress + nonce + command`` (``startCompute`` / ``freeStartCompute``). A job gets
the resources it asked for within the environment's bounds (the engines enforce them) and runs at most
``maxJobDuration`` seconds (clamped to the environment's, or the free tier's, limit).

* Paid: every input's order must be made out to the environment's address and paid by the consumer (ocean.js's
  ``handleComputeOrder``); an order opens its data for the service's timeout (ocean-node's rule: not claimed by
  one job as Provider v2.1's orders are). The job's maximum cost is locked in the escrow from the node's
  wallet before the job is queued; the real cost is claimed when it ends (:mod:`c2d.escrow_settlement`).
* Free: no order and no payment; the environment's ``free`` tier bounds it. Unlike ocean-node, the datasets'
  trusted algorithms still apply (deny by default).

A start without ``queueMaxWaitTime`` is refused when its environment cannot hold it now; with one, the job is
queued (status 1 "Job queued"): an engine claims it once it fits, or it ends with 2 "Job expired in queue" after
that many seconds (:mod:`c2d.db.capacity`; a paid job's lock is then given back whole by the settlement).

Errors are ocean-node's: the HTTP status and a JSON string; nothing is locked or queued when one is raised.
"""

from __future__ import annotations

import logging
import re

from c2d.db.job_queue import JobQueue
from c2d.db.job_records import ComputeTerms, JobDetails
from c2d.environments import ComputeEnvironment
from c2d.exceptions import ChainError, ResourceRequestError
from provider.auth import required_address
from provider.exceptions import ComputeRequestError, NodeProtocolError, ProviderError
from provider.models import ComputeAlgorithm, ComputeStartRequest, ComputeStatus
from provider.ocean_node.auth import node_signer
from provider.ocean_node.initialize import asked_resources
from provider.payments import JobCharge
from provider.services import Services
from provider.start_job import OrderRule, checked_algorithm, checked_inputs, create_job, new_job_id
from provider.status_object import status_object

log = logging.getLogger(__name__)
PAID = "startCompute"
FREE = "freeStartCompute"
UNTRUSTED = frozenset(
    {
        "not_trusted_algo",
        "not_trusted_algo_publisher",
        "no_raw_algo_allowed",
        "algorithm_file_checksum_mismatch",
        "algorithm_container_checksum_mismatch",
    }
)  # provider/trust.py's codes: said as ocean-node says them
PAID_FIELDS = ("environment", "algorithm", "datasets", "maxJobDuration")
FREE_FIELDS = ("algorithm", "datasets", "environment")


def _missing(body: ComputeStartRequest, command: str, fields: tuple[str, ...]) -> None:
    values = {
        "environment": body.environment,
        "algorithm": body.algorithm,
        "datasets": body.datasets,
        "maxJobDuration": body.max_job_duration,
    }
    missing = next((name for name in fields if values[name] is None), None)
    if missing:
        raise NodeProtocolError.missing(missing, command, fields)


def _fits(services: Services, env: ComputeEnvironment, amounts: dict[str, float], free: bool) -> None:
    """Refuses a job the environment cannot hold now (ocean-node's checkIfResourcesAreAvailable): what the running
    and admitted jobs hold and the queued jobs reserve is taken (:mod:`c2d.db.capacity`)."""
    refusal = JobQueue(services.jobs.pool).usage(env).capacity.refusal(amounts, free)
    if refusal is not None:
        raise NodeProtocolError(refusal)


def start_node_compute(services: Services, body: ComputeStartRequest, *, free: bool) -> list[ComputeStatus]:
    """Start a paid (escrow) or free job; raises :class:`NodeProtocolError` (ocean-node's status and message)."""
    command = FREE if free else PAID
    _missing(body, command, FREE_FIELDS if free else PAID_FIELDS)
    if not free and (body.max_job_duration or 0) <= 0:
        raise NodeProtocolError("Invalid maxJobDuration")
    consumer = node_signer(services.nonces, body.consumer_address, command, body.nonce, body.signature)
    env = services.settings.environment(body.environment or "")
    if env is None:
        raise NodeProtocolError("Invalid C2D Environment", 500)
    try:
        amounts = env.job_resources(asked_resources(body.resources), free=free)
    except ResourceRequestError as exc:
        raise NodeProtocolError(f"Error: {exc}" if free else str(exc)) from None
    limit = env.free.max_job_duration if free and env.free else env.max_job_duration
    duration = int(min(body.max_job_duration or limit, limit))
    if not body.queue_max_wait_time:
        _fits(services, env, amounts, free)
    if body.output:
        raise NodeProtocolError("output (remote storage of results) is not supported by this node")
    try:
        return [_start(services, body, env, consumer, amounts, duration, free)]
    except NodeProtocolError:
        raise
    except ProviderError as exc:
        raise NodeProtocolError.of(exc) from None
    except ChainError as exc:  # reading the chain failed (not a refusal): nothing was locked or queued
        log.warning("start of a %s job: the chain is unavailable: %s", "free" if free else "paid", exc)
        raise NodeProtocolError("The node cannot reach its chain now; try again later", 503) from None


def _start(
    services: Services,
    body: ComputeStartRequest,
    env: ComputeEnvironment,
    consumer: str,
    amounts: dict[str, float],
    duration: int,
    free: bool,
) -> ComputeStatus:
    algo = body.algorithm or ComputeAlgorithm()
    algorithm, algo_asset, algo_files = checked_algorithm(services, algo, published_first=True)
    payee = services.payee(env)
    rule = None if free else OrderRule(consumer, env.id, allow_expired_fee=True, made_out_to=payee)
    datasets = body.datasets or []
    for index, dataset in enumerate(datasets):
        if rule is not None and not dataset.transfer_tx_id:
            raise NodeProtocolError(f"Missing transferTxId for DDO {dataset.document_id or index}", 500)
    try:
        inputs, orders = checked_inputs(services, datasets, algorithm, algo_asset, algo_files, rule)
    except ComputeRequestError as exc:
        if exc.code not in UNTRUSTED:
            raise
        name = algo.document_id or "(raw algorithm)"
        position = re.fullmatch(r"datasets\[(\d+)\]", exc.resource)  # "dataset" is the first
        did = datasets[int(position.group(1)) if position else 0].document_id
        raise NodeProtocolError(f"Algorithm {name} not allowed to run on the dataset: {did}") from None
    queue_wait = int(max(0.0, body.queue_max_wait_time or 0.0))
    terms = ComputeTerms(resources=dict(amounts), free=free, maxJobDuration=duration, queueMaxWaitTime=queue_wait)
    if body.metadata:
        terms["metadata"] = body.metadata
    if body.additional_viewers:
        terms["additionalViewers"] = [required_address(a, "additionalViewers") for a in body.additional_viewers]
    job_id = new_job_id()
    sized = env.sized(amounts, duration)
    details = JobDetails(compute=terms)
    if free:
        job = create_job(services, sized, consumer, inputs, algorithm, orders, details, [], job_id)
        return status_object(job, signed=True)
    payment = body.payment
    chain_id, token = (payment.chain_id, payment.token) if payment else (body.chain_id, None)
    charge = JobCharge(job_id, env, consumer, str(token or ""), int(chain_id or 0), amounts, duration)
    with services.payments.locked(charge, queue_wait=queue_wait) as paid:
        terms["payment"] = paid
        job = create_job(services, sized, consumer, inputs, algorithm, orders, details, [], job_id)
    return status_object(job, signed=True)
