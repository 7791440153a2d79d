"""The node as an operator deploys it: `manifests/base` applied (restricted Pod Security enforced), the provider
and the watcher running as pods from the built image on the real node, and an Ocean job bought and run through
them end to end. Only what a cluster of its own would provide comes from the test session: Postgres and the
chain (relayed from 127.0.0.1 to the node's address) and the Ocean contracts' address file (a ConfigMap)."""

from __future__ import annotations

import contextlib
import json
import os
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.db.pool import migrate_dsn, open_pool
from c2d.images import node_image
from c2d.settings import Settings
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from c2d.status import JobStatus
from tests.fileserver import FileServer
from tests.provider.market import open_market
from tests.tcprelay import tcp_relay

from ..conftest import REPO, Cluster
from .conftest import NODE_LABEL, RealNode, wait_status
from .test_jobs import ALGORITHM, DATA, _result, _results_by_name

pytestmark = pytest.mark.e2e

NAMESPACE = "c2d-deploy"
DATABASE = "c2d_deploy"
RESULTS = Path("/var/lib/c2d-dev/deploy-results")  # this deployment's results PV (hostPath)


@dataclass(frozen=True)
class Deployed:
    provider_url: str
    dsn: str  # the deployment's database, as the test reaches it
    provider: LocalAccount  # its own key: a node on a chain of its own refuses anvil's public keys


def _overlay(folder: Path, secrets: dict[str, str], config: dict[str, str], addresses: Path, apiserver: str) -> Path:
    """A kustomization over manifests/base: what an operator's overlay for this cluster says."""
    (folder / "address.json").write_text(addresses.read_text())
    (folder / "results-pv.yaml").write_text(
        textwrap.dedent(f"""\
            apiVersion: v1
            kind: PersistentVolume
            metadata: {{name: {NAMESPACE}-results}}
            spec:
              capacity: {{storage: 10Gi}}
              accessModes: [ReadWriteMany]
              persistentVolumeReclaimPolicy: Retain
              storageClassName: ""
              hostPath: {{path: {RESULTS}, type: Directory}}
        """)
    )
    placement = {
        "nodeSelector": {NODE_LABEL: "real"},
        "tolerations": [{"key": NODE_LABEL, "operator": "Exists", "effect": "NoSchedule"}],
    }
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": [os.path.relpath(REPO / "manifests" / "base", folder), "results-pv.yaml"],  # kustomize: relative
        "secretGenerator": [{"name": "c2d-secrets", "literals": [f"{k}={v}" for k, v in secrets.items()]}],
        "configMapGenerator": [{"name": "c2d-chain", "files": ["address.json"]}],
        "generatorOptions": {"disableNameSuffixHash": True},
        "patches": [
            {
                "target": {"kind": "ConfigMap", "name": "c2d-config"},
                "patch": json.dumps([{"op": "add", "path": f"/data/{k}", "value": v} for k, v in config.items()]),
            },
            {
                "target": {"kind": "PersistentVolumeClaim", "name": "c2d-results"},
                "patch": json.dumps(
                    [
                        {"op": "add", "path": "/spec/storageClassName", "value": ""},
                        {"op": "add", "path": "/spec/volumeName", "value": f"{NAMESPACE}-results"},
                    ]
                ),
            },
            {
                "target": {"kind": "NetworkPolicy", "name": "algorithm-executor-apiserver"},
                "patch": json.dumps(
                    [
                        {
                            "op": "replace",
                            "path": "/spec/egress/0/to/0/ipBlock/cidr",
                            "value": f"{apiserver.rsplit(':', 1)[0]}/32",
                        },
                        {
                            "op": "replace",
                            "path": "/spec/egress/0/ports/0/port",
                            "value": int(apiserver.rsplit(":", 1)[1]),
                        },
                    ]
                ),
            },
            {
                "target": {"kind": "Deployment"},
                "patch": json.dumps(
                    [{"op": "add", "path": f"/spec/template/spec/{k}", "value": v} for k, v in placement.items()]
                ),
            },
            {
                "target": {"kind": "Deployment", "name": "c2d-provider"},
                "patch": json.dumps(
                    [
                        {
                            "op": "add",
                            "path": "/spec/template/spec/volumes/-",
                            "value": {"name": "chain", "configMap": {"name": "c2d-chain"}},
                        },
                        {
                            "op": "add",
                            "path": "/spec/template/spec/containers/0/volumeMounts/-",
                            "value": {"name": "chain", "mountPath": "/etc/c2d-chain", "readOnly": True},
                        },
                    ]
                ),
            },
        ],
    }
    (folder / "kustomization.yaml").write_text(json.dumps(kustomization, indent=1))
    return folder


@contextlib.contextmanager
def _database(stack: Stack) -> Iterator[str]:
    """A database of the deployment's own on the session's Postgres (the session's engines never see its jobs)."""
    admin = database_dsn(stack.settings)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    dsn = make_conninfo(admin, dbname=DATABASE)
    migrate_dsn(dsn)
    try:
        yield dsn
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


@pytest.fixture
def deployed(
    cluster: Cluster,
    real_node: RealNode,
    stack: Stack,
    settings: Settings,
    node_files: FileServer,
    tmp_path: Path,
) -> Iterator[Deployed]:
    # a clean slate: what an earlier run left (killed before its cleanup) goes first
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=110s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    RESULTS.chmod(0o777)  # output-publish writes as uid 65534, the provider (10001) reads
    with (
        _database(stack) as dsn,
        tcp_relay(real_node.ip, ("127.0.0.1", int(str(conninfo_to_dict(dsn)["port"])))) as db_port,
        tcp_relay(real_node.ip, ("127.0.0.1", settings.chain.port)) as chain_port,
    ):
        pod_dsn = make_conninfo(dsn, host=real_node.ip, port=str(db_port))
        provider: LocalAccount = Account.create()
        secrets = {
            "C2D_POSTGRES__DSN": pod_dsn,
            "C2D_CHAIN__RPC_URL": f"http://{real_node.ip}:{chain_port}",
            "C2D_PROVIDER__PRIVATE_KEY": "0x" + bytes(provider.key).hex(),
            "C2D_CHAIN__DEPLOYER_KEY": "0x" + bytes(Account.create().key).hex(),  # unused: the chain is not embedded
        }
        config = {
            "C2D_ENGINE__NAMESPACE": NAMESPACE,
            "C2D_CHAIN__ADDRESS_FILE": "/etc/c2d-chain/address.json",
            "C2D_FETCH__ALLOW_HOSTS": json.dumps([node_files.host]),
            "C2D_ENGINE__ARGO__NODE_SELECTOR": json.dumps({NODE_LABEL: "real"}),
            "C2D_ENGINE__ARGO__TOLERATIONS": json.dumps([{"key": NODE_LABEL, "operator": "Exists"}]),
        }
        overlay = _overlay(tmp_path, secrets, config, settings.address_file, real_node.apiserver)
        try:
            cluster.kubectl("apply", "-k", str(overlay))
            for name in ("c2d-provider", "c2d-watcher"):
                waited = cluster.kubectl(
                    "-n", NAMESPACE, "rollout", "status", f"deployment/{name}", "--timeout=120s", check=False
                )
                assert waited.returncode == 0, _why_not_ready(cluster, name)
            pod = json.loads(
                cluster.kubectl(
                    "-n", NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=c2d-provider", "-o", "json"
                ).stdout
            )["items"][0]
            yield Deployed(f"http://{pod['status']['podIP']}:8030", dsn, provider)
        finally:
            cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=true", "--timeout=120s", check=False)
            cluster.kubectl("delete", "pv", f"{NAMESPACE}-results", check=False)


def _why_not_ready(cluster: Cluster, name: str) -> str:
    pods = cluster.kubectl("-n", NAMESPACE, "get", "pods,replicasets,events", "-o", "wide", check=False).stdout
    logs = cluster.kubectl("-n", NAMESPACE, "logs", f"deployment/{name}", "--tail=30", check=False)
    return f"{name} not ready:\n{pods}\n{logs.stdout}{logs.stderr}"


def test_the_provider_and_watcher_pods_run_an_ocean_job_end_to_end(
    deployed: Deployed,
    cluster: Cluster,
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    consumer: LocalAccount,
    node_files: FileServer,
    python_image: dict[str, str],
) -> None:
    # every pod of the namespace passed the restricted Pod Security Standard (enforced there)
    labels = json.loads(cluster.kubectl("get", "namespace", NAMESPACE, "-o", "json").stdout)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    images = cluster.kubectl(
        "-n", NAMESPACE, "get", "pods", "-o", "jsonpath={range .items[*]}{.spec.containers[0].image}{'\\n'}{end}"
    ).stdout.split()
    assert images == [node_image(), node_image()], images

    with (
        httpx.Client(base_url=deployed.provider_url, timeout=30) as client,
        open_pool(deployed.dsn, max_size=2) as pool,
    ):
        root = client.get("/").json()
        assert root["providerAddresses"] == {"8996": deployed.provider.address}
        market = open_market(client, chain, addresses, publisher, deployed.provider, pool, node_files)
        started = market.start_trusted(consumer, ALGORITHM, DATA, container=python_image)
        assert started.response.status_code == 200, started.response.text
        job_id = started.response.json()[0]["jobId"]
        status = wait_status(market, consumer, job_id)
        assert status["status"] == JobStatus.JOB_FINISHED, status
        names = _results_by_name(status)
        assert _result(market, consumer, job_id, names["reversed.bin"]) == DATA[::-1]
