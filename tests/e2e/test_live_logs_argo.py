"""``computeStreamableLogs`` on the argo engine: the algorithm pod's log, followed through the real apiserver
(kwok serves every ``main`` container the same log line)."""

from __future__ import annotations

import time

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from c2d.db.pool import Pool
from c2d.settings import Settings
from c2d.status import JobStatus
from provider.app import create_app
from provider.routers.logs import NOT_RUNNING
from tests.helpers import serving
from tests.provider.test_live_logs import URL, _query
from tests.workflows.jobs import job_spec, make_environment
from workflows.argo.engine import ArgoEngine
from workflows.argo.kube import KubeClient
from workflows.argo.livelog import PodLogs, PodLogStream

from .conftest import DURATION, ArgoJobs, Cluster

pytestmark = pytest.mark.e2e
ENV = make_environment()


def _stream(logs: PodLogs, argo_jobs: ArgoJobs, job_id: str, timeout: float = 30) -> PodLogStream:
    """The job's algorithm log, once its pod runs (the job's status may say so a moment before the pod does)."""
    end = time.monotonic() + timeout
    while True:
        job = argo_jobs.store.get(job_id)
        assert job is not None
        stream = logs.algorithm_log(job)
        if stream is not None:
            return stream
        assert time.monotonic() < end, f"no running algorithm pod for job {job_id}"
        time.sleep(0.2)


def test_the_algorithm_pod_log_is_followed_through_the_provider(
    argo_engine: ArgoEngine,
    argo_jobs: ArgoJobs,
    argo_settings: Settings,
    kube: KubeClient,
    cluster: Cluster,
    pool: Pool,
    consumer: LocalAccount,
    publisher: LocalAccount,
) -> None:
    spec = job_spec("print('hi')", ["https://example.com/data.csv"], owner=consumer.address)
    job_id = argo_jobs.submit(spec, ENV, inject={"algorithm": {DURATION: "10000"}})
    argo_jobs.wait(job_id, lambda job: job.status == JobStatus.RUNNING_ALGORITHM)
    logs = PodLogs(argo_settings, kube)

    stream = _stream(logs, argo_jobs, job_id)
    data = b""
    end = time.monotonic() + 20
    while cluster.pod_log_line.encode() not in data:
        assert time.monotonic() < end, f"the pod's log line did not arrive: {data!r}"
        data += stream.read() or b""
        time.sleep(0.05)
    stream.close()
    stream.thread.join(timeout=5)
    assert not stream.thread.is_alive()  # closing ends the reader, whether or not the log had ended

    with serving(create_app(argo_settings, pool, argo_engine, logs)) as api:
        other = httpx.get(api + URL, params=_query(publisher, job_id), timeout=30)
        assert (other.status_code, other.text) == (404, NOT_RUNNING)
        with httpx.stream("GET", api + URL, params=_query(consumer, job_id), timeout=30) as response:
            assert response.status_code == 200
            text = ""
            for piece in response.iter_text():
                text += piece
                if cluster.pod_log_line in text:
                    break
            assert cluster.pod_log_line in text
        assert argo_jobs.wait(job_id).status == JobStatus.JOB_FINISHED
        finished = httpx.get(api + URL, params=_query(consumer, job_id), timeout=30)
        assert (finished.status_code, finished.text) == (404, NOT_RUNNING)
    job = argo_jobs.store.get(job_id)
    assert job is not None and logs.algorithm_log(job) is None  # its pod no longer runs
