"""A hostile algorithm on the real node: the enforced NetworkPolicies (kube-router) refuse it the host, the
internet, cloud metadata and other pods, from its first instruction on. The Kubernetes API is the one
address its pod may reach (Argo's executor reports there); without a credential it gets nothing from it."""

from __future__ import annotations

import json

import pytest
from eth_account.signers.local import LocalAccount

from c2d.status import JobStatus
from tests.fileserver import FileServer
from tests.provider.market import Market

from .conftest import RealNode, wait_status
from .test_jobs import _result, _results_by_name

pytestmark = pytest.mark.e2e

# Probes every target again and again for 3 s from the algorithm's first line (a policy that arrives late
# is a hole), then asks the API server for Secrets with whatever credential the container can find.
PROBE = """
import json, os, socket, ssl, sys, time, urllib.request
targets = json.loads(sys.argv[1]) if len(sys.argv) > 1 else TARGETS
report = {name: [] for name in targets}
start = time.monotonic()
while time.monotonic() - start < 3:
    for name, (host, port) in targets.items():
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            report[name].append('connected')
        except OSError as exc:
            report[name].append(type(exc).__name__)
# what the container holds of Argo's or Kubernetes' (the emissary binary in /var/run/argo; never a token)
report['credentials'] = sorted(
    os.path.join(root, name)
    for top in ('/var/run/secrets', '/run/secrets', '/var/run/argo')
    for root, dirs, files in os.walk(top)
    for name in files + dirs
)
context = ssl.create_default_context()
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
try:
    urllib.request.urlopen('https://10.96.0.1/api/v1/namespaces/c2d/secrets', context=context, timeout=3)
    report['apiserver'] = 200
except urllib.error.HTTPError as exc:
    report['apiserver'] = exc.code
except OSError as exc:
    report['apiserver'] = type(exc).__name__
open('/data/outputs/report.json', 'w').write(json.dumps(report))
"""


def test_a_hostile_algorithm_reaches_nothing_but_a_credential_less_api(
    node_market: Market,
    consumer: LocalAccount,
    python_image: dict[str, str],
    real_node: RealNode,
    node_files: FileServer,
) -> None:
    file_server_port = int(node_files.host.rsplit(":", 1)[1])
    kubelet_port = 20250  # cluster/node.sh KUBELET_PORT, on the node address
    targets = {
        "host file server": (real_node.ip, file_server_port),  # input-fetch downloaded from it a moment before
        "kubelet": (real_node.ip, kubelet_port),
        "internet": ("1.1.1.1", 443),
        "cloud metadata": ("169.254.169.254", 80),
        "apiserver relay on the node": (real_node.ip, int(real_node.apiserver.rsplit(":", 1)[1])),
        "apiserver service": ("10.96.0.1", 443),
    }
    code = f"import urllib.error\nTARGETS = {targets!r}\n{PROBE}".encode()
    node_files.hits.clear()
    started = node_market.start_trusted(consumer, code, b"x", container=python_image)
    job_id = started.response.json()[0]["jobId"]
    status = wait_status(node_market, consumer, job_id)
    assert status["status"] == JobStatus.JOB_FINISHED, status
    report = json.loads(_result(node_market, consumer, job_id, _results_by_name(status)["report.json"]))

    assert sum(node_files.hits.values()) >= 2  # the control: input-fetch's pod reached this server (both assets)
    for name in ("host file server", "kubelet", "internet", "cloud metadata"):
        assert report[name] and "connected" not in report[name], (name, report[name])
    # The API server: reachable (the executor needs it), but the algorithm has no credential, and an
    # anonymous request is refused.
    # Argo's emissary: its binary (the algorithm's parent), its control folder and the step's template (no
    # credential in it); no ServiceAccount token anywhere
    emissary = ["/var/run/argo/argoexec", "/var/run/argo/ctr", "/var/run/argo/ctr/main", "/var/run/argo/template"]
    assert report["credentials"] == emissary, report
    assert report["apiserver"] in (401, 403), report
