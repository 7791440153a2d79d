"""manifests/ applied to the real apiserver: accepted, least-privilege RBAC, Pod Security enforced.

NetworkPolicy *enforcement* needs a CNI plugin, which a kwok cluster has none of: here the policies
are validated by the apiserver and their selectors checked against the labels job pods carry;
that no packet leaves an algorithm pod is for a real cluster to show (and the local engine's
sandbox tests show it on this machine).
"""

from __future__ import annotations

import json

import pytest

from tests.workflows.jobs import job_spec, make_environment
from workflows import labels
from workflows.builder import build_workflow
from workflows.registry import BuildOptions
from workflows.templates import default_registry

from .conftest import NAMESPACE, REPO, Cluster

pytestmark = pytest.mark.e2e


def test_every_object_is_accepted_and_applying_again_changes_nothing(cluster: Cluster, manifests_applied: str) -> None:
    again = cluster.kubectl("apply", "-k", str(REPO / "manifests" / "dev"), "--dry-run=server", "-o", "name")
    kinds = {line.split("/")[0] for line in again.stdout.split()}
    assert {
        "namespace",
        "serviceaccount",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "networkpolicy.networking.k8s.io",
        "deployment.apps",
        "statefulset.apps",
        "persistentvolumeclaim",
        "limitrange",
    } <= kinds
    argo = cluster.kubectl("-n", "argo", "apply", "-k", str(REPO / "manifests" / "argo"), "--dry-run=server")
    assert "workflow-controller-configmap" in argo.stdout


@pytest.mark.parametrize(
    ("account", "verb", "resource", "allowed"),
    [
        ("c2d-watcher", "create", "workflows.argoproj.io", True),
        ("c2d-watcher", "watch", "workflows.argoproj.io", True),
        ("c2d-watcher", "create", "secrets", True),
        ("c2d-watcher", "get", "secrets", False),  # creates fetch-spec Secrets, never reads any
        ("c2d-watcher", "list", "secrets", False),
        ("c2d-watcher", "get", "pods/log", True),
        ("c2d-watcher", "create", "pods", False),
        ("c2d-watcher", "delete", "deployments.apps", False),
        ("c2d-executor", "create", "workflowtaskresults.argoproj.io", True),
        ("c2d-executor", "get", "secrets", False),
        ("c2d-executor", "list", "workflows.argoproj.io", False),
        ("c2d-job", "get", "pods", False),
        ("c2d-job", "create", "workflowtaskresults.argoproj.io", False),
        ("c2d-provider", "list", "workflows.argoproj.io", False),
        ("c2d-provider", "get", "pods/log", True),  # computeStreamableLogs
        ("c2d-provider", "list", "pods", True),
        ("c2d-provider", "create", "pods", False),
        ("c2d-provider", "get", "secrets", False),
        ("c2d-provider", "create", "workflows.argoproj.io", False),
    ],
)
def test_service_accounts_have_least_privilege(
    cluster: Cluster, manifests_applied: str, account: str, verb: str, resource: str, allowed: bool
) -> None:
    answer = cluster.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        NAMESPACE,
        f"--as=system:serviceaccount:{NAMESPACE}:{account}",
        check=False,
    )
    assert answer.stdout.strip() == ("yes" if allowed else "no"), answer.stderr
    other = cluster.kubectl(
        "auth",
        "can-i",
        verb,
        resource,
        "-n",
        "default",
        f"--as=system:serviceaccount:{NAMESPACE}:{account}",
        check=False,
    )
    assert other.stdout.strip() == "no"  # nothing outside the namespace


def test_the_namespace_refuses_privileged_pods(cluster: Cluster, manifests_applied: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "escape-attempt", "namespace": NAMESPACE},
        "spec": {"containers": [{"name": "main", "image": "busybox", "securityContext": {"privileged": True}}]},
    }
    answer = cluster.kubectl("create", "-f", "-", "--dry-run=server", stdin=json.dumps(pod), check=False)
    assert answer.returncode != 0 and "violates PodSecurity" in answer.stderr


def test_job_pods_carry_the_labels_the_network_policies_select() -> None:
    spec = job_spec("print(1)", ["https://example.com/a.csv"])
    options = BuildOptions(results_target="pvc", volume="emptyDir")
    workflow = build_workflow(spec, make_environment(), default_registry(), options).to_dict()
    egress = {
        t["name"]: t["metadata"]["labels"][labels.EGRESS] for t in workflow["spec"]["templates"] if "container" in t
    }
    assert egress == {"input-fetch": "allowed", "algorithm": "denied", "output-publish": "allowed"}
    policies = (REPO / "manifests" / "base" / "networkpolicies.yaml").read_text()
    assert f"{labels.EGRESS}: denied" in policies and f"{labels.EGRESS}: allowed" in policies
    assert workflow["spec"]["automountServiceAccountToken"] is False
    assert workflow["spec"]["executor"]["serviceAccountName"] == "c2d-executor"
