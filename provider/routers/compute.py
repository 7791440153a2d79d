"""The compute resource: initializeCompute, start (POST), free start, status (GET), stop (PUT), delete, results,
environments.

The routes are thin: they parse the request (:mod:`provider.models`), tell Provider v2.1's requests (ocean.py)
from ocean-node's (ocean.js 8.x) by their fields, and hand them to the domain functions (:mod:`provider.initialize`
and :mod:`provider.start_job`; :mod:`provider.ocean_node`; the job store, :mod:`provider.results`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, RedirectResponse, Response

from c2d.db.job_queue import JobQueue
from c2d.db.jobs import JobRecord, JobStore
from c2d.exceptions import ObjectNotFoundError, StorageError
from c2d.status import STOPREQ_API
from provider.auth import required_address, verify_job_request, verify_request_or_command
from provider.exceptions import NotFound, RequestValidationFailed, ServiceUnavailable, node_error_responses
from provider.initialize import initialize_compute
from provider.models import (
    ComputeEnvironmentInfo,
    ComputeStartRequest,
    ComputeStatus,
    InitializeComputeRequest,
    InitializeComputeResponse,
    NodeEnvironmentInfo,
    NodeInitializeComputeResponse,
    OpenApi,
    QueryText,
)
from provider.ocean_node.environments import node_environments
from provider.ocean_node.initialize import initialize_node_compute
from provider.ocean_node.start import start_node_compute
from provider.results import LocalResult, RedirectResult, StreamedResponse
from provider.services import Services, ServicesDep
from provider.start_job import start_compute
from provider.status_object import status_object

router = APIRouter(prefix="/api/services", tags=["compute"])


# -- the paid part: provider fees, then a job on paid orders -----------------------------------------------
@router.post(
    "/initializeCompute",
    summary="Provider fees (or still-valid orders) for a compute job; with ocean-node's body, the escrow payment",
    response_model_exclude_none=True,
    responses=node_error_responses(text=True),
)
def initialize(
    services: ServicesDep, body: InitializeComputeRequest
) -> InitializeComputeResponse | NodeInitializeComputeResponse:
    if body.node_protocol:
        return initialize_node_compute(services, body)
    return initialize_compute(services, body)


@router.post(
    "/compute",
    summary="Start a compute job on paid orders (Provider v2.1) or on orders and an escrow lock (ocean-node)",
    response_model_exclude_unset=True,
    responses=node_error_responses(),
)
def start(services: ServicesDep, body: ComputeStartRequest) -> list[ComputeStatus]:
    if body.node_protocol:
        return start_node_compute(services, body, free=False)
    return start_compute(services, body)


@router.post(
    "/freeCompute",
    summary="Start a free compute job (ocean-node): no order, no payment, within the environment's free tier",
    response_model_exclude_unset=True,
    responses=node_error_responses(),
)
def start_free(services: ServicesDep, body: ComputeStartRequest) -> list[ComputeStatus]:
    return start_node_compute(services, body, free=True)


# -- the consumer's jobs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobQuery:
    """The jobs a request is about: the consumer's, optionally one job or one dataset's."""

    owner: str
    job_id: str | None
    document_id: str | None

    def jobs(self, store: JobStore) -> list[JobRecord]:
        return store.find(self.owner, job_id=self.job_id or None, did=self.document_id or None)


def job_query(
    consumer_address: Annotated[str | None, Query(alias="consumerAddress")] = None,
    job_id: Annotated[str | None, Query(alias="jobId")] = None,
    document_id: Annotated[str | None, Query(alias="documentId")] = None,
) -> JobQuery:
    return JobQuery(required_address(consumer_address), job_id, document_id)


def signed_job_query(
    services: ServicesDep,
    query: Annotated[JobQuery, Depends(job_query)],
    consumer_address: Annotated[str | None, Query(alias="consumerAddress")] = None,
    nonce: QueryText = None,
    signature: QueryText = None,
) -> JobQuery:
    """Signed by the consumer over consumer + jobId + documentId + nonce (Provider v2.1's stop/delete rule) or
    consumer + nonce + ``stopCompute`` (ocean-node's)."""
    verify_job_request(
        services.nonces,
        query.owner,
        query.job_id,
        query.document_id,
        nonce,
        signature,
        (consumer_address, "stopCompute"),
    )
    return query


Jobs = Annotated[JobQuery, Depends(job_query)]
SignedJobs = Annotated[JobQuery, Depends(signed_job_query)]


def _stop(services: Services, job: JobRecord) -> None:
    """Ask the engine to stop the job; a job still waiting for room ends at once (it never ran)."""
    if services.jobs.request_stop(job.job_id, STOPREQ_API):
        ended = JobQueue(services.jobs.pool).end_waiting(job.job_id, "provider")
        if not ended and services.engine:
            services.engine.stop(job.job_id)
    services.statuses.drop(job.owner)  # the next status read sees it at once (the notification follows)


# The statuses leave ``resultsDid`` out unless it is set (exclude_unset); GET is mostly answered by
# provider/fastpath.py, which writes the same bytes (ComputeStatus.wire) and verifies signatures the same way.
@router.get(
    "/compute",
    summary="Status of the consumer's jobs (all, one job, or one dataset's)",
    description="Unsigned (ocean.js), or signed like a stop (ocean.py): a signature, if sent, is verified and "
    "its nonce consumed; only a signed request sees `resultsDid`.",
    response_model_exclude_unset=True,
)
def status(
    services: ServicesDep, query: Jobs, nonce: QueryText = None, signature: QueryText = None
) -> list[ComputeStatus]:
    if signature:
        verify_job_request(services.nonces, query.owner, query.job_id, query.document_id, nonce, signature)
    return [status_object(job, signed=bool(signature)) for job in query.jobs(services.jobs)]


@router.put("/compute", summary="Stop the consumer's running job(s)", response_model_exclude_unset=True)
def stop(services: ServicesDep, query: SignedJobs) -> list[ComputeStatus]:
    for job in query.jobs(services.jobs):
        if not job.finished:
            _stop(services, job)
    return [status_object(job, signed=True) for job in query.jobs(services.jobs)]


@router.delete(
    "/compute",
    summary="Stop the consumer's job(s) and delete finished jobs' results",
    response_model_exclude_unset=True,
)
def delete(services: ServicesDep, query: SignedJobs) -> list[ComputeStatus]:
    for job in query.jobs(services.jobs):
        if not job.finished:
            _stop(services, job)
        elif not job.removed:
            try:
                services.results.delete(job)  # first: a job is marked removed only once its data is gone
            except StorageError as exc:
                raise ServiceUnavailable(f"the results of job {job.job_id} could not be deleted now: {exc}") from None
            services.jobs.mark_removed(job.job_id, reason="deleted by the consumer")
            services.statuses.drop(job.owner)
    return [status_object(job, signed=True) for job in query.jobs(services.jobs)]


RESULT_RESPONSES: dict[int | str, OpenApi] = {
    200: {
        "description": "the file's bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    206: {
        "description": "the byte range a `Range: bytes=...` header asks (one range; several: the whole file, 200)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    307: {"description": "to a short-lived presigned URL of the file (C2D_STORAGE__S3__PRESIGN_RESULTS)"},
    416: {"description": "no byte of the file in the requested range (`Content-Range: bytes */<size>`)"},
}


@router.get(
    "/computeResult",
    summary="Download one result file of a job (streamed)",
    response_class=FileResponse,
    responses=RESULT_RESPONSES,
)
def result(
    services: ServicesDep,
    consumer_address: Annotated[str | None, Query(alias="consumerAddress")] = None,
    job_id: Annotated[str | None, Query(alias="jobId")] = None,
    index: QueryText = None,
    nonce: QueryText = None,
    signature: QueryText = None,
) -> Response:
    owner = required_address(consumer_address)
    if not job_id:
        raise RequestValidationFailed({"jobId": ["The jobId field is required."]})
    if index is None or not index.lstrip("-").isdigit():
        raise RequestValidationFailed({"index": ["The index field must be an integer."]})
    sent = consumer_address or ""
    legacy = f"{owner}{job_id}{index}"
    verify_request_or_command(services.nonces, owner, legacy, sent, "getComputeResult", nonce, signature)
    job = services.jobs.get(job_id)
    viewers = (
        {viewer.lower() for viewer in (job.details.get("compute") or {}).get("additionalViewers", [])} if job else set()
    )
    if job is None or (job.owner.lower() != owner.lower() and owner.lower() not in viewers):
        raise NotFound(f"No job {job_id} for owner {owner}")
    position = int(index)
    results = job.results or []
    if job.removed or not results:
        raise NotFound(f"No results for job {job_id}")
    if position < 0 or position >= len(results):
        raise NotFound(f"No such index {position} in this compute job")
    entry = results[position]
    filename = str(entry["filename"]).rsplit("/", 1)[-1]
    try:
        found = services.results.open(job, entry)
    except ObjectNotFoundError:
        found = None
    except StorageError as exc:
        raise ServiceUnavailable(f"Result {position} of job {job_id} cannot be read now: {exc}") from None
    if found is None:
        raise NotFound(f"Result {position} of job {job_id} is no longer stored")
    if isinstance(found, LocalResult):
        return FileResponse(found.path, filename=filename, media_type="application/octet-stream")
    if isinstance(found, RedirectResult):
        return RedirectResponse(found.url, status_code=307)
    headers = {"Content-Disposition": f'attachment; filename="{quote(filename)}"'}
    return StreamedResponse(found, headers)  # the whole file, or the byte range the request asks


@router.get(
    "/computeEnvironments",
    summary="Compute environments: by chain id (with ?chainId=, Provider v2.1) or one list (ocean-node)",
)
def environments(
    services: ServicesDep, chain_id: Annotated[int | None, Query(alias="chainId")] = None
) -> dict[str, list[ComputeEnvironmentInfo]] | list[NodeEnvironmentInfo]:
    """With ``chainId`` (what ocean.py sends): the environments keyed by this node's chain id, ``{"<chainId>": []}``
    for another chain. Without (ocean.js): ocean-node's flat list, with resources, prices and the free tier."""
    if chain_id is None:
        return node_environments(services)
    settings = services.settings
    envs = [
        ComputeEnvironmentInfo(
            id=env.id,
            cpu_number=env.cpu,
            cpu_type="",
            gpu_number=env.gpus,  # what a job of this protocol gets: it cannot ask
            gpu_type=env.gpu.description if env.gpu and env.gpus else "",
            ram_gb=env.ram_gb,
            disk_gb=env.disk_gb,
            price_min=env.price_min,
            desc=env.description,
            current_jobs=JobQueue(services.jobs.pool).usage(env).running,  # the jobs holding room, not waiting
            max_jobs=env.max_jobs,
            consumer_address=env.consumer_address or services.address,
            storage_expiry=env.storage_expiry,
            max_job_duration=env.max_job_duration,
            last_seen=f"{time.time():.6f}",
            fee_token=services.fees.token(env),
            pipeline=list(env.pipeline),
        )
        for env in settings.environments
    ]
    own = settings.chain.chain_id
    if chain_id != own:
        return {str(chain_id): []}
    return {str(own): envs}
