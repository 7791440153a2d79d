"""A node that dies under a running job (the last tests of the tier: they take the node down and bring it
back). Argo alone never notices: the pod stays Running in the API for ever, and the job with it."""

from __future__ import annotations

import json
import time

import pytest
from eth_account.signers.local import LocalAccount

from c2d.status import JobStatus
from tests.provider.market import Market

from ..conftest import Cluster
from .conftest import RealNode, job_pods, wait_algorithm_running, wait_job_cleared, wait_status

pytestmark = pytest.mark.e2e

SLEEPER = b"import time\nprint('running', flush=True)\ntime.sleep(600)\n"
# Kubernetes' node monitor marks a silent node unreachable after 50 s; the job pods leave it after the engine's
# node_lost_grace (5 s in these tests) and the watcher looks every 2 s.
NODE_LOST_WITHIN = 150


def test_a_job_whose_node_dies_fails_naming_the_step_and_nothing_stays_once_the_node_is_back(
    node_market: Market, consumer: LocalAccount, python_image: dict[str, str], real_node: RealNode, cluster: Cluster
) -> None:
    started = node_market.start_trusted(consumer, SLEEPER, b"x", container=python_image)
    assert started.response.status_code == 200, started.response.text
    job_id = started.response.json()[0]["jobId"]
    wait_status(node_market, consumer, job_id, JobStatus.RUNNING_ALGORITHM)
    wait_algorithm_running(cluster, job_id)

    real_node.crash()
    try:
        status = wait_status(node_market, consumer, job_id, timeout=NODE_LOST_WITHIN)
        assert status["status"] == JobStatus.ALGORITHM_FAILED, status
        assert "the node running step algorithm was lost" in str(status["statusText"]), status
        assert not status["results"] and status["stopreq"] == 0, status
        assert all(p["metadata"].get("deletionTimestamp") for p in job_pods(cluster, job_id))
    finally:
        real_node.restart()
    # the node's kubelet, back, ends the pods the cluster deleted meanwhile; then the job's volume goes
    wait_job_cleared(cluster, job_id, timeout=120)
    # terminated by the watcher, the Workflow ends once its pod is gone (Argo waits for the step's outcome)
    end = time.monotonic() + 30
    while (phase := _workflow_phase(cluster, job_id)) not in ("Failed", "Error", ""):  # "": deleted
        assert time.monotonic() < end, f"the workflow of the lost job is still {phase}"
        time.sleep(0.5)
    node = json.loads(cluster.kubectl("get", "node", real_node.name, "-o", "json").stdout)
    assert not [t for t in node["spec"].get("taints") or [] if t["key"].startswith("node.kubernetes.io/")], node


def _workflow_phase(cluster: Cluster, job_id: str) -> str:
    found = cluster.kubectl(
        "-n", "c2d", "get", "workflow", f"c2d-{job_id}", "-o", "jsonpath={.status.phase}", check=False
    )
    return found.stdout.strip()
