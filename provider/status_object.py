"""Jobs as Ocean's legacy status objects (what ocean.py reads), and the result list without locations."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from c2d.db.jobs import JobRecord
from provider.models import ComputeStatus, ResultFile

PUBLIC_RESULT_KEYS = ("filename", "filesize", "type")  # never where a result is stored


def _epoch(value: datetime | None) -> str | None:
    return f"{value.timestamp():.6f}" if value is not None else None


def public_results(job: JobRecord) -> list[ResultFile] | Literal[""]:
    """The result list as clients see it (index = position); ``""`` until results exist (Ocean legacy)."""
    if not job.results or job.removed:
        return ""
    return [
        ResultFile.model_validate({key: value for key, value in result.items() if key in PUBLIC_RESULT_KEYS})
        for result in job.results
    ]


def status_object(job: JobRecord, *, signed: bool) -> ComputeStatus:
    """The job's status object; write it with :meth:`ComputeStatus.wire` (``exclude_unset``).

    ``signed``: the request proved it comes from the owner (a verified signature). Only then is ``resultsDid``
    set (once the results were published as an asset, ``output.publishOutput``): an unsigned status shows no
    more than ocean-node's unsigned ``getComputeStatus`` (``core/compute/getStatus.ts``), which leaves out where
    a job's results went (``output``, ``outputBucketId``) and keeps the rest this object holds."""
    status = ComputeStatus(
        agreement_id=job.agreement_id or "",
        job_id=job.job_id,
        owner=job.owner,
        status=job.status,
        status_text=job.status_text,
        date_created=_epoch(job.date_created),
        date_finished=_epoch(job.date_finished),
        results=public_results(job),
        stopreq=job.stopreq,
        removed=job.removed,
        algo_did=job.algo_did or "",
        input_did=job.input_dids,
        did=job.did,
        environment=job.environment,
        expire_timestamp=_epoch(job.expiry),
    )
    did = (job.details.get("resultAsset") or {}).get("did")
    return status.model_copy(update={"results_did": str(did)}) if did and signed else status
