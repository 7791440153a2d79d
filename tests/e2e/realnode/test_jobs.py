"""Ocean jobs bought and started through the provider, run by the argo engine on a real node: the job's
pods run our images (input-fetch, the algorithm in the python runtime image, output-publish), and the
consumer gets the results through computeResult."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from eth_account.signers.local import LocalAccount

from c2d.status import JobStatus
from tests.provider.market import Market
from tests.provider.test_compute_api import _signed

from ..conftest import CLUSTER_DIR, Cluster
from .conftest import RealNode, job_pods, job_volumes, wait_algorithm_running, wait_job_cleared, wait_status

pytestmark = pytest.mark.e2e

DATA = bytes(range(256)) * 1024 + b"\x00end"  # 256 KiB, every byte value, no text encoding survives by luck
ALGORITHM = b"""
import hashlib, json, os, sys
did = json.loads(os.environ['DIDS'])[0]
data = open(f'/data/inputs/{did}/0', 'rb').read()
open('/data/outputs/reversed.bin', 'wb').write(data[::-1])
open('/data/outputs/digest.txt', 'w').write(hashlib.sha256(data).hexdigest())
print('read', len(data), 'bytes', flush=True)
"""


def _result(market: Market, consumer: LocalAccount, job_id: str, index: int) -> bytes:
    query = {"consumerAddress": consumer.address, "jobId": job_id, "index": str(index)}
    response = market.client.get(
        "/api/services/computeResult", params=query | _signed(consumer, f"{consumer.address}{job_id}{index}")
    )
    assert response.status_code == 200, response.text
    return bytes(response.content)


def _results_by_name(status: dict[str, object]) -> dict[str, int]:
    results = status["results"]
    assert isinstance(results, list)
    return {str(entry["filename"]): index for index, entry in enumerate(results)}


def test_an_ocean_job_runs_on_real_pods_and_its_results_are_byte_identical(
    node_market: Market, consumer: LocalAccount, python_image: dict[str, str], real_node: RealNode, cluster: Cluster
) -> None:
    started = node_market.start_trusted(consumer, ALGORITHM, DATA, container=python_image)
    assert started.response.status_code == 200, started.response.text
    job_id = started.response.json()[0]["jobId"]

    status = wait_status(node_market, consumer, job_id)
    assert (status["status"], status["statusText"]) == (JobStatus.JOB_FINISHED, "Job finished"), status
    names = _results_by_name(status)
    assert _result(node_market, consumer, job_id, names["reversed.bin"]) == DATA[::-1]
    assert _result(node_market, consumer, job_id, names["digest.txt"]).decode() == hashlib.sha256(DATA).hexdigest()
    assert f"read {len(DATA)} bytes" in _result(node_market, consumer, job_id, names["algorithm.log"]).decode()

    workflow = cluster.kubectl("-n", "c2d", "get", "workflow", f"c2d-{job_id}", "-o", "json")
    nodes = json.loads(workflow.stdout)["status"]["nodes"].values()
    pods = {n["templateName"]: n.get("hostNodeName") for n in nodes if n["type"] == "Pod"}
    assert pods == dict.fromkeys(("input-fetch", "algorithm", "output-publish"), real_node.name), pods

    # nothing of the job stays on the cluster: pods, the data volume's claim, its volume and folder
    end = time.monotonic() + 60
    while job_pods(cluster, job_id) or job_volumes(cluster, job_id):
        assert time.monotonic() < end, f"left on the cluster: {job_volumes(cluster, job_id)}"
        time.sleep(0.5)
    assert not [p for p in (CLUSTER_DIR / "node" / "volumes").iterdir() if f"c2d-{job_id}" in p.name]


def test_a_failing_algorithm_ends_41_with_its_log(
    node_market: Market, consumer: LocalAccount, python_image: dict[str, str]
) -> None:
    code = b"import sys\nprint('about to fail', file=sys.stderr, flush=True)\nsys.exit(3)\n"
    started = node_market.start_trusted(consumer, code, b"x", container=python_image)
    job_id = started.response.json()[0]["jobId"]
    status = wait_status(node_market, consumer, job_id)
    assert status["status"] == JobStatus.ALGORITHM_FAILED, status
    assert "3" in str(status["statusText"]), status
    log = _result(node_market, consumer, job_id, _results_by_name(status)["algorithm.log"])
    assert b"about to fail" in log


def test_stop_terminates_the_running_algorithm_pod(
    node_market: Market, consumer: LocalAccount, python_image: dict[str, str], cluster: Cluster
) -> None:
    code = b"import time\nprint('running', flush=True)\ntime.sleep(600)\n"
    started = node_market.start_trusted(consumer, code, b"x", container=python_image)
    job_id = started.response.json()[0]["jobId"]
    wait_status(node_market, consumer, job_id, JobStatus.RUNNING_ALGORITHM)
    wait_algorithm_running(cluster, job_id)

    query = {"consumerAddress": consumer.address, "jobId": job_id}
    (stopped,) = node_market.client.put(
        "/api/services/compute", params=query | _signed(consumer, f"{consumer.address}{job_id}")
    ).json()
    assert stopped["stopreq"] == 1
    t0 = time.monotonic()
    status = wait_status(node_market, consumer, job_id)
    assert status["stopreq"] == 1 and status["status"] in (JobStatus.JOB_FINISHED, JobStatus.ALGORITHM_FAILED), status
    assert time.monotonic() - t0 < 60
    end = time.monotonic() + 60
    while [p for p in job_pods(cluster, job_id) if p["status"].get("phase") == "Running"]:
        assert time.monotonic() < end, "a pod of the stopped job still runs"
        time.sleep(0.5)


def test_an_algorithm_image_the_node_cannot_pull_fails_the_job_and_leaves_no_pod(
    node_market: Market, consumer: LocalAccount, cluster: Cluster
) -> None:
    absent = {"entrypoint": "python $ALGO", "image": "localhost/c2d-absent", "tag": "1.0", "checksum": ""}
    started = node_market.start_trusted(consumer, b"print(1)", b"x", container=absent)
    assert started.response.status_code == 200, started.response.text
    job_id = started.response.json()[0]["jobId"]
    status = wait_status(node_market, consumer, job_id)
    assert status["status"] == JobStatus.ALGORITHM_FAILED, status
    text = str(status["statusText"])
    assert "localhost/c2d-absent:1.0" in text and ("ErrImagePull" in text or "ImagePullBackOff" in text), text
    assert "https://" not in text  # the kubelet's message (registry internals) stays out
    wait_job_cleared(cluster, job_id)
