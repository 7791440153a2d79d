"""A job bought and started through the provider API runs as an Argo Workflow; the API reports it."""

from __future__ import annotations

import time

import pytest
from eth_account.signers.local import LocalAccount

from c2d.status import JobStatus
from tests.provider.conftest import market  # noqa: F401 (fixture; its `client` is this tier's)
from tests.provider.market import Market
from tests.provider.test_start import ALGORITHM, DATA

from .conftest import ArgoJobs

pytestmark = pytest.mark.e2e


def test_a_job_started_through_the_provider_runs_on_argo(
    market: Market,  # noqa: F811
    consumer: LocalAccount,
    argo_jobs: ArgoJobs,
) -> None:
    response = market.start_trusted(consumer, ALGORITHM, DATA).response
    assert response.status_code == 200, response.text
    job_id = response.json()[0]["jobId"]

    seen: list[int] = []
    end = time.monotonic() + 90
    while True:
        (status,) = market.client.get(
            "/api/services/compute", params={"consumerAddress": consumer.address, "jobId": job_id}
        ).json()
        if not seen or seen[-1] != status["status"]:
            seen.append(status["status"])
        if status["status"] == JobStatus.JOB_FINISHED or time.monotonic() > end:
            break
        time.sleep(0.05)
    assert seen[-1] == JobStatus.JOB_FINISHED, seen
    assert seen == sorted(seen), seen  # the API walks forward: queued/started, provisioning, running, publishing
    assert JobStatus.RUNNING_ALGORITHM in seen

    workflow = argo_jobs.workflow(job_id)
    assert workflow is not None and workflow["status"]["phase"] == "Succeeded"
    fetch = next(t for t in workflow["spec"]["templates"] if t["name"] == "input-fetch")
    (spec_env,) = [e for e in fetch["container"]["env"] if e["name"] == "C2D_FETCH_SPEC"]
    assert spec_env["valueFrom"]["secretKeyRef"]["name"] == f"c2d-{job_id}-fetch"  # never in the Workflow
    assert "arguments" not in workflow["spec"] or not workflow["spec"]["arguments"].get("parameters")
