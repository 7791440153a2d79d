"""The e2e tier: a real kube-apiserver + Argo workflow-controller, pods simulated by kwok.

``make e2e`` builds the control plane (cluster/build.sh, cached in .cache/cluster), starts it
(cluster/cluster.sh up) and runs ``pytest -m e2e``. Without a running cluster every test here
is skipped, saying so. Fake-pod knobs (cluster/stages.yaml): pod annotations
``c2d.test/exit-code`` and ``c2d.test/duration-ms``.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from c2d.db.jobs import JobRecord, JobStore
from c2d.db.pool import Pool
from c2d.environments import ComputeEnvironment
from c2d.settings import ArgoSettings, Settings
from c2d.stack.stack import Stack
from provider.app import create_app
from tests.workflows.jobs import new_job
from workflows.argo.engine import ArgoEngine
from workflows.argo.kube import KubeClient, KubeConfig
from workflows.builder import build_workflow
from workflows.exceptions import KubeApiError
from workflows.registry import BuildOptions
from workflows.spec import JobSpec
from workflows.templates import default_registry

REPO = Path(__file__).resolve().parents[2]
CLUSTER_DIR = Path(os.environ.get("C2D_E2E_CLUSTER_DIR", REPO / ".cache" / "cluster" / "run"))
KUBECTL = REPO / ".cache" / "cluster" / "bin" / "kubectl"
NAMESPACE = "c2d"
EXIT_CODE = "c2d.test/exit-code"
DURATION = "c2d.test/duration-ms"
RESULTS = "c2d.test/output-results"  # value of the step's `results` output (cluster/executor_sim.py)

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    argo_server: str
    pod_log_line: str

    def kubectl(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def server_and_ca(self) -> tuple[str, bytes]:
        """The apiserver's URL and CA certificate (PEM), from the admin kubeconfig."""
        doc = yaml.safe_load(self.kubeconfig.read_text())
        entry = doc["clusters"][0]["cluster"]
        if entry.get("certificate-authority-data"):
            return str(entry["server"]), base64.b64decode(entry["certificate-authority-data"])
        return str(entry["server"]), (self.kubeconfig.parent / entry["certificate-authority"]).read_bytes()

    def token_client(self, token: str, folder: Path) -> tuple[KubeClient, Path]:
        """A client with the in-cluster credentials of a pod whose ServiceAccount token is ``token`` (written
        into ``folder``/serviceaccount, returned with the client)."""
        server, ca = self.server_and_ca()
        host, _, port = server.removeprefix("https://").rpartition(":")
        account = folder / "serviceaccount"
        account.mkdir()
        (account / "ca.crt").write_bytes(ca)
        (account / "token").write_text(token)
        return KubeClient(KubeConfig(service_account=account, service_host=host, service_port=port), NAMESPACE), account


def env_file_values(env_file: Path) -> dict[str, str]:
    """The ``export NAME=value`` lines of cluster.sh's cluster.env or node.sh's node.env ({} when absent)."""
    if not env_file.is_file():
        return {}
    values = {}
    for line in env_file.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value.strip('"')
    return values


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    values = env_file_values(CLUSTER_DIR / "cluster.env")
    kubeconfig = Path(values.get("KUBECONFIG", CLUSTER_DIR / "admin.kubeconfig"))
    if not kubeconfig.is_file() or not KUBECTL.is_file():
        pytest.skip(f"no e2e control plane at {CLUSTER_DIR}: run `make e2e` (builds and starts it)")
    found = Cluster(kubeconfig, values.get("ARGO_SERVER_URL", "http://127.0.0.1:2746"), values["KWOK_POD_LOG_LINE"])
    probe = found.kubectl("get", "--raw", "/readyz", check=False)
    if probe.returncode != 0:
        pytest.skip(f"the e2e control plane is not running ({probe.stderr.strip()[:200]}): run `make cluster-up`")
    return found


@pytest.fixture(scope="session")
def manifests_applied(cluster: Cluster) -> str:
    """The dev kustomization applied to the real apiserver (it validates every object)."""
    result = cluster.kubectl("apply", "-k", str(REPO / "manifests" / "dev"))
    token = "secret/c2d-executor.service-account-token"  # filled by the controller-manager
    cluster.kubectl("-n", NAMESPACE, "wait", "--for=jsonpath={.data.token}", token)
    return result.stdout


@pytest.fixture(scope="session")
def argo_settings(settings: Settings, cluster: Cluster, manifests_applied: str) -> Settings:
    argo = ArgoSettings(
        kubeconfig=cluster.kubeconfig,
        server_url=cluster.argo_server,
        volume="emptyDir",  # kwok has no volume provisioner; the results claim is bound to a dev PV
        poll_seconds=0.2,
        watch_timeout=30,
    )
    engine = settings.engine.model_copy(update={"kind": "argo", "namespace": NAMESPACE, "argo": argo})
    return settings.model_copy(update={"engine": engine})


@pytest.fixture(scope="session")
def kube(argo_settings: Settings) -> Iterator[KubeClient]:
    client = KubeClient(KubeConfig.load(argo_settings.engine.argo.kubeconfig), NAMESPACE)
    yield client
    client.close()


@pytest.fixture
def argo_engine(stack: Stack, argo_settings: Settings, pool: Pool) -> Iterator[ArgoEngine]:
    with ArgoEngine(argo_settings, pool) as running:
        yield running


@pytest.fixture
def client(stack: Stack, argo_settings: Settings, pool: Pool, argo_engine: ArgoEngine) -> Iterator[TestClient]:
    """The provider API configured for the argo engine (it only writes job rows; the engine submits)."""
    with TestClient(create_app(argo_settings, pool, argo_engine)) as test_client:
        yield test_client


@dataclass
class ArgoJobs:
    """Jobs written the way the provider writes them, with fake-pod annotations injected per step."""

    settings: Settings
    store: JobStore
    kube: KubeClient

    def submit(
        self,
        spec: JobSpec,
        env: ComputeEnvironment,
        inject: dict[str, dict[str, str]] | None = None,
        workflow_labels: dict[str, str] | None = None,
        ttl_seconds: int | None = None,
    ) -> str:
        """``inject``: template name -> extra pod annotations (the fake-pod knobs)."""
        options = BuildOptions.for_job(self.settings, env, spec.job_id)
        workflow = build_workflow(spec, env, default_registry(), options).to_dict()
        workflow["metadata"]["labels"].update(workflow_labels or {})
        if ttl_seconds is not None:
            workflow["spec"]["ttlStrategy"] = {"secondsAfterCompletion": ttl_seconds}
        for template in workflow["spec"]["templates"]:
            extra = (inject or {}).get(template["name"])
            if extra:
                template.setdefault("metadata", {}).setdefault("annotations", {}).update(extra)
        self.store.create(new_job(spec, env, workflow, "argo"))
        return spec.job_id

    def wait(self, job_id: str, until: Callable[[JobRecord], bool] | None = None, timeout: float = 90) -> JobRecord:
        end = time.monotonic() + timeout
        while True:
            job = self.store.get(job_id)
            assert job is not None
            if (until or (lambda j: j.finished))(job):
                return job
            if time.monotonic() > end:
                raise AssertionError(f"job {job_id} stuck at {job.status} {job.status_text!r}")
            time.sleep(0.1)

    def statuses(self, job_id: str) -> list[int]:
        return [event.status for event in self.store.events(job_id)]

    def wait_workflow(
        self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 30
    ) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while True:
            workflow = self.workflow(job_id)  # None: not submitted yet, or gone
            if workflow is not None and until(workflow):
                return workflow
            assert time.monotonic() < end, f"workflow of job {job_id}: condition not met: {workflow}"
            time.sleep(0.1)

    def workflow(self, job_id: str) -> dict[str, Any] | None:
        try:
            return self.kube.get_workflow(f"c2d-{job_id}")
        except KubeApiError as exc:
            if exc.code == 404:
                return None
            raise


@pytest.fixture
def argo_jobs(argo_settings: Settings, pool: Pool, kube: KubeClient) -> ArgoJobs:
    return ArgoJobs(argo_settings, JobStore(pool), kube)


class EngineProcess:
    """``c2d engine`` (argo) as its own process, the way the c2d-watcher Deployment runs it."""

    def __init__(self, settings: Settings, dsn: str, log: Path) -> None:
        argo = settings.engine.argo
        self.env = {
            **os.environ,
            "C2D_DATA_DIR": str(settings.data_dir),
            "C2D_POSTGRES__DSN": dsn,
            "C2D_ENGINE__KIND": "argo",
            "C2D_ENGINE__NAMESPACE": settings.engine.namespace,
            "C2D_ENGINE__ARGO__KUBECONFIG": str(argo.kubeconfig),
            "C2D_ENGINE__ARGO__SERVER_URL": str(argo.server_url),
            "C2D_ENGINE__ARGO__VOLUME": argo.volume,
            "C2D_ENGINE__ARGO__POLL_SECONDS": "0.2",
        }
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(REPO / ".venv" / "bin" / "c2d"), "engine"], env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.terminate()
        return self.process.wait(timeout=30)
