"""Jobs as Ocean's legacy status objects (what ocean.py reads), and the result list without locations."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from c2d.db.jobs import JobRecord
from provider.models import ComputeStatus, JobPayment, ResourceAmount, ResultFile

PUBLIC_RESULT_KEYS = ("filename", "filesize", "type")  # never where a result is stored


def _epoch(value: datetime | None) -> str | None:
    return f"{value.timestamp():.6f}" if value is not None else None


def public_results(job: JobRecord) -> list[ResultFile] | Literal[""]:
    """The result list as clients see it (index = position, written for ocean-node's jobs); ``""`` until results
    exist (Ocean legacy)."""
    if not job.results or job.removed:
        return ""
    numbered = "compute" in job.details  # ocean-node's results carry their index; Provider v2.1's do not
    return [
        ResultFile.model_validate(
            {key: value for key, value in result.items() if key in PUBLIC_RESULT_KEYS}
            | ({"index": index} if numbered else {})
        )
        for index, result in enumerate(job.results)
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
    update: dict[str, object] = {}
    did = (job.details.get("resultAsset") or {}).get("did")
    if did and signed:  # where the results were published: only to a signed request (ocean-node omits it)
        update["results_did"] = str(did)
    terms = job.details.get("compute")
    if terms is not None:  # started through ocean-node's protocol: its terms too
        update["resources"] = [ResourceAmount(id=k, amount=v) for k, v in (terms.get("resources") or {}).items()]
        update["is_free"] = bool(terms.get("free"))
        update["max_job_duration"] = terms.get("maxJobDuration")
        if terms.get("metadata"):
            update["metadata"] = terms.get("metadata")
        payment = terms.get("payment")
        if payment is not None:
            update["payment"] = JobPayment(
                chain_id=payment.get("chainId", 0),
                token=payment.get("token", ""),
                lock_tx=payment.get("lockTx"),
                claim_tx=payment.get("claimTx"),
                cancel_tx=payment.get("cancelTx"),
                cost=payment.get("cost", "0"),
            )
    return status.model_copy(update=update) if update else status
