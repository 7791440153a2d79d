"""Jobs as Ocean's legacy status objects (what ocean.py reads), and the result list without locations."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from c2d.db.jobs import JobRecord

PUBLIC_RESULT_KEYS = ("filename", "filesize", "type")


def _epoch(value: datetime | None) -> str | None:
    return f"{value.timestamp():.6f}" if value is not None else None


def public_results(job: JobRecord) -> list[dict[str, Any]] | str:
    """The result list as clients see it (index = position); ``""`` until results exist (Ocean legacy)."""
    if not job.results or job.removed:
        return ""
    return [{key: result[key] for key in PUBLIC_RESULT_KEYS if key in result} for result in job.results]


def status_object(job: JobRecord) -> dict[str, Any]:
    return {
        "agreementId": job.agreement_id or "",
        "jobId": job.job_id,
        "owner": job.owner,
        "status": job.status,
        "statusText": job.status_text,
        "dateCreated": _epoch(job.date_created),
        "dateFinished": _epoch(job.date_finished),
        "results": public_results(job),
        "stopreq": job.stopreq,
        "removed": job.removed,
        "algoDID": job.algo_did or "",
        "inputDID": job.input_dids,
        "did": job.did,
        "environment": job.environment,
        "expireTimestamp": _epoch(job.expiry),
        **_results_did(job),
    }


def _results_did(job: JobRecord) -> dict[str, str]:
    """``resultsDid`` once the results were published as an asset (``output.publishOutput``)."""
    did = (job.details.get("resultAsset") or {}).get("did")
    return {"resultsDid": str(did)} if did else {}
