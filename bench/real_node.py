"""Per-job latency on the real node: an Ocean job through the provider and the argo engine, next to a bare
Argo workflow of three steps from the same images, alternating, in the same run.

    .venv/bin/python bench/real_node.py [--rounds 5]      (needs `make node-up`; `make bench-node`)

An Ocean round: initializeCompute, the two orders on the chain, POST /compute, then the status polled until
it lists the results (trivial algorithm: one small output file). Its breakdown comes from the job's status
events in Postgres (microseconds): start -> configuring (the Workflow submitted, input-fetch starting) ->
running the algorithm -> publishing -> finished. A bare round: a Workflow of three pods (node image,
runtime image, node image; each runs `python -c pass`) on the same node, from create to the controller's
Succeeded. Both run with the controller, kubelet and executor settings of `make e2e`.

The bare rounds are also profiled: the pods are sampled every 50 ms while they run and the first time each
pod reaches a mark (scheduled, Argo's init container running/done, main running/done, wait done, pod
Succeeded) is kept; the table gives each step's time between marks, and the gap from one pod's end to the
next pod's creation (Argo's controller) and from the last pod's end to the Workflow's Succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common import REPO, free_port, percentile, workspace
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from c2d.chain.artifacts import Artifacts
from c2d.chain.client import Chain
from c2d.chain.deploy import read_address_file
from c2d.db.pool import open_pool
from c2d.placement import Toleration
from c2d.settings import (
    ANVIL_KEYS,
    ArgoSettings,
    ChainSettings,
    EngineSettings,
    FetchSettings,
    PostgresSettings,
    StorageSettings,
    load_settings,
)
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from provider.app import create_app
from tests.fileserver import serve_files
from tests.provider.market import Market, open_market
from workflows.argo.engine import ArgoEngine
from workflows.argo.kube import KubeClient, KubeConfig
from workflows.argo.objects import WORKFLOW_LABEL

CLUSTER = REPO / ".cache" / "cluster" / "run"
KUBECTL = REPO / ".cache" / "cluster" / "bin" / "kubectl"
NAMESPACE = "c2d"
RESULTS_DIR = Path("/var/lib/c2d-dev/results")  # manifests/dev's results PV
PHASES = {10: "start", 20: "configure", 40: "algorithm", 60: "publish", 70: "finished"}
ALGORITHM = b"open('/data/outputs/out.txt', 'w').write('1')\n"


def kubectl(*args: str, stdin: str | None = None) -> str:
    kubeconfig = str(CLUSTER / "admin.kubeconfig")
    done = subprocess.run(
        [str(KUBECTL), "--kubeconfig", kubeconfig, *args], input=stdin, capture_output=True, text=True, check=True
    )
    return done.stdout


def images() -> dict[str, dict[str, Any]]:
    listing = json.loads((REPO / ".cache" / "images" / "images.json").read_text())["images"]
    return {image["name"]: image for image in listing}


MARKS = ("created", "scheduled", "init running", "init done", "main running", "main done", "wait done", "succeeded")


def _reached(pod: dict[str, Any]) -> list[str]:
    """The marks a pod has reached, as the API shows it now."""
    status = pod.get("status") or {}
    states = {c["name"]: c.get("state") or {} for c in status.get("containerStatuses") or []}
    inits = [c.get("state") or {} for c in status.get("initContainerStatuses") or []]
    checks = {
        "created": True,
        "scheduled": bool((pod.get("spec") or {}).get("nodeName")),
        "init running": any("running" in s or "terminated" in s for s in inits),
        "init done": bool(inits) and all("terminated" in s for s in inits),
        "main running": any(k in states.get("main", {}) for k in ("running", "terminated")),
        "main done": "terminated" in states.get("main", {}),
        "wait done": "terminated" in states.get("wait", {}),
        "succeeded": status.get("phase") == "Succeeded",
    }
    return [mark for mark, reached in checks.items() if reached]


class PodTimeline(threading.Thread):
    """Samples a Workflow's pods every 50 ms: the first time (monotonic) each pod reached each mark."""

    def __init__(self, client: KubeClient, workflow: str) -> None:
        super().__init__(daemon=True)
        self.client, self.workflow = client, workflow
        self.first: dict[str, dict[str, float]] = {}
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.05):
            now = time.monotonic()
            for pod in self.client.list_pods(f"{WORKFLOW_LABEL}={self.workflow}"):
                marks = self.first.setdefault(str(pod["metadata"]["name"]), {})
                for mark in _reached(pod):
                    marks.setdefault(mark, now)

    def gaps(self, end: float) -> dict[str, float]:
        """Seconds between marks of each pod (in creation order), and between pods; ``end``: Succeeded seen."""
        pods = sorted(self.first.values(), key=lambda marks: marks["created"])
        gaps: dict[str, float] = {}
        previous_end: float | None = None
        for index, marks in enumerate(pods, 1):
            if previous_end is not None:
                gaps[f"pod {index - 1} succeeded -> pod {index} created"] = marks["created"] - previous_end
            seen = [(mark, marks[mark]) for mark in MARKS if mark in marks]
            for (a, ta), (b, tb) in itertools.pairwise(seen):
                gaps[f"pod {index}: {a} -> {b}"] = tb - ta
            previous_end = marks.get("succeeded", previous_end)
        if previous_end is not None:
            gaps[f"pod {len(pods)} succeeded -> workflow Succeeded"] = end - previous_end
        return gaps


def bare_round(node_image: str, python_image: str, profile: dict[str, list[float]] | None = None) -> float:
    """Seconds from create to Succeeded of a 3-step Workflow (one pod per step) on the real node; ``profile``
    gathers its pods' timeline (:class:`PodTimeline`)."""
    name = f"bare-{secrets.token_hex(4)}"
    steps = [("fetch", node_image), ("algorithm", python_image), ("publish", node_image)]
    templates = [
        {
            "name": step,
            "container": {
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["python3", "-c", "pass"],
                "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            },
        }
        for step, image in steps
    ]
    dag = [
        {"name": s, "template": s, **({"depends": f"{p}.Succeeded"} if p else {})}
        for (s, _), p in zip(steps, [None, "fetch", "algorithm"], strict=True)
    ]
    workflow = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "entrypoint": "main",
            "serviceAccountName": "c2d-job",
            "automountServiceAccountToken": False,
            "executor": {"serviceAccountName": "c2d-executor"},
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "seccompProfile": {"type": "RuntimeDefault"}},
            "nodeSelector": {"c2d.test/node": "real"},
            "tolerations": [{"key": "c2d.test/node", "operator": "Exists", "effect": "NoSchedule"}],
            "podGC": {"strategy": "OnWorkflowCompletion"},
            "templates": [{"name": "main", "dag": {"tasks": dag}}, *templates],
        },
    }
    client = KubeClient(KubeConfig.load(CLUSTER / "admin.kubeconfig"), NAMESPACE)
    timeline = PodTimeline(client, name)
    timeline.start()
    start = time.monotonic()
    kubectl("create", "-f", "-", stdin=json.dumps(workflow))
    try:
        while True:
            phase = kubectl("-n", NAMESPACE, "get", "workflow", name, "-o", "jsonpath={.status.phase}")
            if phase in ("Succeeded", "Failed", "Error"):
                if phase != "Succeeded":
                    raise SystemExit(f"the bare workflow {name} ended {phase}")
                end = time.monotonic()
                timeline.halt.set()
                timeline.join()
                for gap, seconds in timeline.gaps(end).items():
                    if profile is not None:
                        profile.setdefault(gap, []).append(seconds)
                return end - start
            if time.monotonic() - start > 300:
                raise SystemExit(f"the bare workflow {name} did not finish in 300 s")
            time.sleep(0.1)
    finally:
        timeline.halt.set()
        client.close()
        kubectl("-n", NAMESPACE, "delete", "workflow", name, "--wait=false")


def ocean_round(market: Market, consumer: LocalAccount, container: dict[str, str]) -> tuple[float, str]:
    """Seconds from initializeCompute to a status that lists the results; the job id."""
    start = time.monotonic()
    started = market.start_trusted(consumer, ALGORITHM, b"x", container=container)
    if started.response.status_code != 200:
        raise SystemExit(f"the job was refused: {started.response.text}")
    job_id = started.response.json()[0]["jobId"]
    while True:
        (status,) = market.client.get(
            "/api/services/compute", params={"consumerAddress": consumer.address, "jobId": job_id}
        ).json()
        if status["dateFinished"] is not None:
            if status["status"] != 70 or not status["results"]:
                raise SystemExit(f"job {job_id} ended {status['status']} {status['statusText']!r}")
            return time.monotonic() - start, job_id
        if time.monotonic() - start > 300:
            raise SystemExit(f"job {job_id} did not finish in 300 s (status {status['status']})")
        time.sleep(0.1)


def breakdown(pool: Any, job_id: str) -> dict[str, float]:
    """Seconds spent in each phase of the job (its status events)."""
    with pool.connection() as conn:
        rows = conn.execute("SELECT status, at FROM job_events WHERE job_id = %s ORDER BY id", (job_id,)).fetchall()
    times = {int(status): at.timestamp() for status, at in rows}
    marks = [(PHASES[s], times[s]) for s in sorted(times) if s in PHASES]
    return {f"{a}->{b}": tb - ta for (a, ta), (b, tb) in itertools.pairwise(marks)}


@contextlib.contextmanager
def ocean_market(data: Path, node_ip: str) -> Iterator[tuple[Market, Any]]:
    with serve_files(node_ip) as files:
        argo = ArgoSettings(
            kubeconfig=CLUSTER / "admin.kubeconfig",
            node_selector={"c2d.test/node": "real"},
            tolerations=[Toleration(key="c2d.test/node", operator="Exists", effect="NoSchedule")],
            poll_seconds=0.2,
        )
        settings = load_settings(
            data_dir=data,
            postgres=PostgresSettings(port=free_port()),
            chain=ChainSettings(port=free_port()),
            fetch=FetchSettings(allow_hosts=[files.host]),
            engine=EngineSettings(kind="argo", namespace=NAMESPACE, argo=argo),
        )
        # the provider serves results from the dev results PV; the embedded stack keeps a store of its own
        # (it makes its store private, 0700: the job pods could not write into the PV's folder any more)
        served = settings.model_copy(update={"storage": StorageSettings(local_dir=RESULTS_DIR)})
        with Stack(settings) as stack, open_pool(database_dsn(stack.settings), max_size=8) as pool:
            chain = Chain(stack.settings.rpc_url, Artifacts(stack.settings.npm_dir))
            addresses = read_address_file(stack.settings.address_file)
            assert addresses is not None
            provider: LocalAccount = Account.from_key(settings.provider.private_key.get_secret_value())
            publisher: LocalAccount = Account.from_key(ANVIL_KEYS[2])
            with ArgoEngine(served, pool) as engine, TestClient(create_app(served, pool, engine)) as client:
                yield open_market(client, chain, addresses, publisher, provider, pool, files), pool


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    node_env = CLUSTER / "node" / "node.env"
    if not node_env.is_file():
        print("no real node: run `make node-up` first", file=sys.stderr)
        return 2
    node_ip = next(line.split("=", 1)[1] for line in node_env.read_text().splitlines() if "NODE_IP=" in line)
    kubectl("apply", "-k", str(REPO / "manifests" / "dev"))
    built = images()
    python = built["c2d-python"]
    repository, tag = python["reference"].rsplit(":", 1)
    container = {"entrypoint": "python $ALGO", "image": repository, "tag": tag, "checksum": python["digest"]}
    consumer: LocalAccount = Account.from_key(ANVIL_KEYS[3])
    ocean: list[float] = []
    bare: list[float] = []
    phases: dict[str, list[float]] = {}
    profile: dict[str, list[float]] = {}
    with workspace("node") as data, ocean_market(data, node_ip) as (market, pool):
        print("warm-up: one round of each (not counted) ...", flush=True)
        bare_round(built["c2d-node"]["reference"], python["reference"])
        ocean_round(market, consumer, container)
        for n in range(args.rounds):
            bare.append(bare_round(built["c2d-node"]["reference"], python["reference"], profile))
            seconds, job_id = ocean_round(market, consumer, container)
            ocean.append(seconds)
            for phase, spent in breakdown(pool, job_id).items():
                phases.setdefault(phase, []).append(spent)
            print(f"  round {n + 1}: ocean job {seconds:5.1f} s   bare 3-step workflow {bare[-1]:5.1f} s", flush=True)
    print()
    print(f"{'':34} {'p50':>7} {'p95':>7}")
    print(f"{'ocean job: order -> results listed':34} {percentile(ocean, 0.5):6.1f}s {percentile(ocean, 0.95):6.1f}s")
    for phase, values in phases.items():
        print(f"{'  ' + phase:34} {percentile(values, 0.5):6.1f}s {percentile(values, 0.95):6.1f}s")
    print(f"{'bare Argo 3-step workflow':34} {percentile(bare, 0.5):6.1f}s {percentile(bare, 0.95):6.1f}s")
    print()
    print(f"{'bare workflow, sampled every 50 ms':44} {'p50':>7} {'p95':>7}")
    for gap, values in profile.items():
        print(f"{'  ' + gap:44} {percentile(values, 0.5):6.2f}s {percentile(values, 0.95):6.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
