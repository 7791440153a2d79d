"""The real-node tier: the same control plane with a real kubelet + containerd + runc next to kwok
(cluster/node.sh), so the job's pods really run: argoexec, our images, kube-router's NetworkPolicies.

The node carries the taint ``c2d.test/node=real:NoSchedule`` (kwok's tests never land on it); these
tests select it with the engine's ``node_selector`` and ``tolerations`` settings, as an operator
selects a node pool for jobs. Without a real node every test here is skipped, saying so.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.db.pool import Pool
from c2d.placement import Toleration
from c2d.settings import Settings
from c2d.stack.stack import Stack
from provider.app import create_app
from tests.fileserver import FileServer, serve_files
from tests.provider.market import Market, open_market
from workflows.argo.engine import ArgoEngine

from ..conftest import CLUSTER_DIR, REPO, Cluster, env_file_values

NODE_LABEL = "c2d.test/node"
RESULTS_DIR = Path("/var/lib/c2d-dev/results")  # manifests/dev's results PV (hostPath), made by node.sh
IMAGES = REPO / ".cache" / "images" / "images.json"
NODE_SCRIPT = REPO / "cluster" / "node.sh"


@dataclass(frozen=True)
class RealNode:
    name: str
    ip: str  # the node's (bridge) address: what pods reach the host at
    apiserver: str  # ip:port of the apiserver relay as pods see it after the Service DNAT

    def crash(self) -> None:
        """The node loses power: kubelet, containerd and every pod process killed at once (cluster/node.sh)."""
        _node_sh("crash", timeout=60)

    def restart(self) -> None:
        """The node comes back (cluster/node.sh up: idempotent, waits until the node is Ready)."""
        _node_sh("up", timeout=300)


def _node_sh(action: str, timeout: float) -> None:
    done = subprocess.run(["bash", str(NODE_SCRIPT), action], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"cluster/node.sh {action} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> RealNode:
    env_file = CLUSTER_DIR / "node" / "node.env"
    if not env_file.is_file():
        pytest.skip(f"no real node next to the control plane ({env_file} missing): run `make e2e`")
    values = env_file_values(env_file)
    name = values["NODE_NAME"]
    ready = cluster.kubectl(
        "get", "node", name, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False
    )
    if ready.stdout.strip() != "True":
        pytest.skip(f"the real node {name} is not Ready ({ready.stderr.strip()[:200]}): run `cluster/node.sh up`")
    return RealNode(name, values["NODE_IP"], values["NODE_APISERVER_ENDPOINT"])


@pytest.fixture(scope="session")
def node_files(real_node: RealNode) -> Iterator[FileServer]:
    """A file server on the node's address: where input-fetch pods download the assets from."""
    with serve_files(real_node.ip) as files:
        yield files


@pytest.fixture(scope="session")
def python_image() -> dict[str, str]:
    """The DDO container of the tests' algorithms: the runtime image built by `make images`, by digest."""
    if not IMAGES.is_file():
        pytest.skip("no images built (.cache/images/images.json): run `make images`")
    (image,) = [i for i in json.loads(IMAGES.read_text())["images"] if i["name"] == "c2d-python"]
    repository, tag = image["reference"].rsplit(":", 1)
    return {"entrypoint": "python $ALGO", "image": repository, "tag": tag, "checksum": image["digest"]}


@pytest.fixture(scope="session")
def node_settings(argo_settings: Settings, node_files: FileServer) -> Settings:
    """The argo engine with a per-job volume from the node's provisioner, job pods on the real node,
    results on the dev results PV (which the provider serves from) and the node's file server allowed."""
    argo = argo_settings.engine.argo.model_copy(
        update={
            "volume": "pvc",
            "image_pull_grace": 5,
            "node_lost_grace": 5,
            "node_check_seconds": 2,
            "node_selector": {NODE_LABEL: "real"},
            "tolerations": [Toleration(key=NODE_LABEL, operator="Exists", effect="NoSchedule")],
        }
    )
    engine = argo_settings.engine.model_copy(update={"argo": argo})
    fetch = argo_settings.fetch.model_copy(update={"allow_hosts": [node_files.host]})
    storage = argo_settings.storage.model_copy(update={"local_dir": RESULTS_DIR})
    return argo_settings.model_copy(update={"engine": engine, "fetch": fetch, "storage": storage})


@pytest.fixture
def node_engine(stack: Stack, node_settings: Settings, pool: Pool) -> Iterator[ArgoEngine]:
    with ArgoEngine(node_settings, pool) as running:
        yield running


@pytest.fixture
def node_market(
    stack: Stack,
    node_settings: Settings,
    pool: Pool,
    node_engine: ArgoEngine,
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    provider_account: LocalAccount,
    node_files: FileServer,
) -> Iterator[Market]:
    """The provider API on the argo engine whose jobs run on the real node; assets served by node_files."""
    with TestClient(create_app(node_settings, pool, node_engine)) as client:
        yield open_market(client, chain, addresses, publisher, provider_account, pool, node_files)


def wait_status(
    market: Market, consumer: LocalAccount, job_id: str, status: int | None = None, timeout: float = 150
) -> dict[str, Any]:
    """The job's Ocean status object once it reaches ``status`` (None: once it has finished)."""
    end = time.monotonic() + timeout
    while True:
        (found,) = market.client.get(
            "/api/services/compute", params={"consumerAddress": consumer.address, "jobId": job_id}
        ).json()
        if (found["status"] == status) if status is not None else found["dateFinished"] is not None:
            return dict(found)
        assert time.monotonic() < end, f"job {job_id} stuck: {found}"
        time.sleep(0.2)


def job_pods(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    listing = cluster.kubectl(
        "-n", "c2d", "get", "pods", "-l", f"workflows.argoproj.io/workflow=c2d-{job_id}", "-o", "json"
    )
    return list(json.loads(listing.stdout)["items"])


def job_volumes(cluster: Cluster, job_id: str) -> list[str]:
    """The job's data claim (Argo names it c2d-<job id>-data) and the volume bound to it."""
    names = cluster.kubectl(
        "get", "pv,pvc", "-A", "-o", "jsonpath={range .items[*]}{.metadata.name} {.spec.claimRef.name}{'\\n'}{end}"
    )
    return [line for line in names.stdout.splitlines() if f"c2d-{job_id}" in line]


def wait_algorithm_running(cluster: Cluster, job_id: str) -> None:
    """Until the job's algorithm pod runs on the node."""
    end = time.monotonic() + 60
    while not any(
        p["metadata"]["annotations"].get("workflows.argoproj.io/node-name", "").endswith("algorithm")
        and p["status"].get("phase") == "Running"
        for p in job_pods(cluster, job_id)
    ):
        assert time.monotonic() < end, "the algorithm pod never ran"
        time.sleep(0.3)


def wait_job_cleared(cluster: Cluster, job_id: str, timeout: float = 60) -> None:
    """Until no pod and no volume of the job is left on the cluster."""
    end = time.monotonic() + timeout
    while job_pods(cluster, job_id) or job_volumes(cluster, job_id):
        assert time.monotonic() < end, "the job's pods or volume stayed"
        time.sleep(0.5)
