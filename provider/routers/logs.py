"""``computeStreamableLogs`` (ocean-node's endpoint, ocean.js ``computeStreamableLogs``): a running algorithm's
output, streamed as it is written.

``GET /api/services/computeStreamableLogs?jobId&consumerAddress&nonce&signature``, signed ocean-node's way
(``consumerAddress + nonce + "getComputeStreamableLogs"``). 200: a chunked ``text/plain`` body, the algorithm's
stdout and stderr from its first byte, that ends when the algorithm ends (at most
``C2D_PROVIDER__LIVE_LOG_MAX_BYTES``; the whole log is a result of the job). 404 "Job not found or not running"
when the job does not exist, is not the caller's, or is not running its algorithm (ocean-node's answer; it does
not check the owner, this node does). Errors are ocean-node's, as text: 401 for a bad signature or nonce, 400 for a
missing job id or address, 404 as above.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from provider.exceptions import NodeProtocolError, ServiceUnavailable, node_error_responses
from provider.models import OpenApi, QueryText
from provider.ocean_node.auth import node_signer
from provider.services import ServicesDep
from workflows.exceptions import EngineError
from workflows.livelogs import LogStream

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/services", tags=["compute"])
COMMAND = "getComputeStreamableLogs"
NOT_RUNNING = "Job not found or not running"
MISSING_JOB_ID = 'Missing one ( "jobId" ) or more required field(s) for command: "getComputeStreamableLogs"'
POLL_SECONDS = 0.2  # between looks at a log with nothing new: no thread is held while waiting
MEDIA_TYPE = "text/plain; charset=utf-8"

LOG_RESPONSES: dict[int | str, OpenApi] = {
    **node_error_responses(text=True),
    404: {"description": NOT_RUNNING, "content": {"text/plain": {"schema": {"type": "string"}}}},
    200: {
        "description": "the algorithm's output as it is written (chunked), until the algorithm ends",
        "content": {MEDIA_TYPE: {"schema": {"type": "string"}}},
    },
}


async def follow(stream: LogStream, max_bytes: int, poll: float = POLL_SECONDS) -> AsyncIterator[bytes]:
    """The bytes of ``stream`` until it ends, at most ``max_bytes`` of them (then a line saying so). Each read runs
    in a worker thread and returns at once; between reads that find nothing the wait is on the event loop. The
    stream is closed however this ends: its end, the cap, an error, or the client gone (the server cancels the
    response, and the read under way, if any, finishes first)."""
    sent = 0
    try:
        while True:
            try:
                chunk = await anyio.to_thread.run_sync(stream.read)
            except EngineError as exc:
                log.warning("a followed algorithm log ended early: %s", exc)
                return
            if chunk is None:
                return
            if not chunk:
                await anyio.sleep(poll)
                continue
            if sent + len(chunk) > max_bytes:
                yield chunk[: max_bytes - sent]
                yield f"\n[log truncated: this request streams at most {max_bytes} bytes]\n".encode()
                return
            sent += len(chunk)
            yield chunk
    finally:
        stream.close()


class LogResponse(StreamingResponse):
    """The chunked answer that follows ``stream``, which it closes once sent, or once the client is gone."""

    media_type = MEDIA_TYPE

    def __init__(self, stream: LogStream, max_bytes: int) -> None:
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy holds the lines back
        super().__init__(follow(stream, max_bytes), headers=headers)
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:  # also when the body was left at a yield (the client went while a chunk was being sent)
            self.stream.close()


@router.get(
    "/computeStreamableLogs",
    summary="Follow the output of a running algorithm (streamed until it ends)",
    status_code=200,
    response_class=LogResponse,
    responses=LOG_RESPONSES,
)
def streamable_logs(
    services: ServicesDep,
    consumer_address: Annotated[str | None, Query(alias="consumerAddress")] = None,
    job_id: Annotated[str | None, Query(alias="jobId")] = None,
    nonce: QueryText = None,
    signature: QueryText = None,
) -> LogResponse:
    if not job_id:
        raise NodeProtocolError(MISSING_JOB_ID, text=True)
    owner = node_signer(services.nonces, consumer_address, COMMAND, nonce, signature, text=True)
    job = services.jobs.get(job_id)
    if job is None or job.owner.lower() != owner.lower() or job.finished:
        raise NodeProtocolError(NOT_RUNNING, 404, text=True)
    if services.logs is None:
        raise ServiceUnavailable("this node does not stream logs of running jobs")
    try:
        stream = services.logs.algorithm_log(job)
    except EngineError as exc:
        log.warning("job %s: its algorithm's log cannot be followed: %s", job_id, exc)
        raise ServiceUnavailable("the algorithm's log cannot be read now; try again shortly") from None
    if stream is None:
        raise NodeProtocolError(NOT_RUNNING, 404, text=True)
    return LogResponse(stream, services.settings.provider.live_log_max_bytes)
