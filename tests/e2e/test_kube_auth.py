"""The engine's Kubernetes client authenticates against the real apiserver as clusters in production make it:
an exec credential plugin in the kubeconfig (EKS, GKE, AKS), asked again when its token expires or is refused,
and an in-cluster ServiceAccount token that the kubelet rotates.

The tokens are real ServiceAccount tokens of the watcher (TokenRequest, ``kubectl create token``); a token
bound to a Secret stops being accepted when that Secret is deleted, which is how these tests revoke one.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import NAMESPACE, Cluster
from workflows.argo.kube import KubeClient, KubeConfig
from workflows.exceptions import KubeApiError

pytestmark = pytest.mark.e2e
ACCOUNT = "c2d-watcher"  # may list Workflows in the namespace (manifests/base/rbac.yaml)
SELECTOR = "c2d.oceanprotocol.com/job-id"

PLUGIN = """\
import json, pathlib, sys
here = pathlib.Path(sys.argv[1])
calls = here / "calls"
calls.write_text(str(int(calls.read_text() or 0) + 1) if calls.exists() else "1")
status = {"token": (here / "token").read_text().strip()}
expiry = here / "expiry"
if expiry.exists():
    status["expirationTimestamp"] = expiry.read_text().strip()
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential", "status": status}))
"""


class Tokens:
    """Watcher tokens, each bound to a Secret of its own so that deleting the Secret revokes it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.bound: list[str] = []

    def issue(self) -> tuple[str, str]:
        """A fresh token and the name of the Secret it is bound to."""
        name = f"c2d-e2e-token-{uuid.uuid4().hex[:8]}"
        self.cluster.kubectl("-n", NAMESPACE, "create", "secret", "generic", name)
        self.bound.append(name)
        token = self.cluster.kubectl(
            "-n", NAMESPACE, "create", "token", ACCOUNT, "--bound-object-kind", "Secret", "--bound-object-name", name
        ).stdout.strip()
        return token, name

    def revoke(self, name: str, token: str) -> None:
        """Delete the token's Secret and wait until the apiserver refuses the token (it caches a token it
        accepted for about 10 s)."""
        self.cluster.kubectl("-n", NAMESPACE, "delete", "secret", name, "--wait=true")
        server, ca = self.cluster.server_and_ca()
        context = ssl.create_default_context(cadata=ca.decode())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            answer = httpx.get(f"{server}/version", headers={"Authorization": f"Bearer {token}"}, verify=context)
            if answer.status_code == 401:
                return
            time.sleep(0.5)
        raise AssertionError("the apiserver still accepts a token whose Secret was deleted a minute ago")

    def close(self) -> None:
        for name in self.bound:
            self.cluster.kubectl("-n", NAMESPACE, "delete", "secret", name, "--ignore-not-found", check=False)


@pytest.fixture
def tokens(cluster: Cluster, manifests_applied: str) -> Iterator[Tokens]:
    issued = Tokens(cluster)
    yield issued
    issued.close()


def _exec_kubeconfig(cluster: Cluster, folder: Path) -> Path:
    server, ca = cluster.server_and_ca()
    (folder / "ca.crt").write_bytes(ca)
    (folder / "plugin.py").write_text(PLUGIN)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority": "ca.crt"}}],
        "users": [
            {
                "name": "plugin",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": sys.executable,
                        "args": [str(folder / "plugin.py"), str(folder)],
                        "interactiveMode": "Never",
                    }
                },
            }
        ],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "plugin", "namespace": NAMESPACE}}],
        "current-context": "e2e",
    }
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def _calls(folder: Path) -> int:
    return int((folder / "calls").read_text())


def test_an_exec_plugin_kubeconfig_authenticates_and_is_asked_again_when_refused(
    cluster: Cluster, tokens: Tokens, tmp_path: Path
) -> None:
    first, first_secret = tokens.issue()
    (tmp_path / "token").write_text(first)
    client = KubeClient(KubeConfig.load(_exec_kubeconfig(cluster, tmp_path)), NAMESPACE)
    try:
        client.list_workflows(SELECTOR)
        assert _calls(tmp_path) == 1
        # the plugin's credential is revoked; the plugin now has a new one: one 401, asked again, served
        second, _ = tokens.issue()
        (tmp_path / "token").write_text(second)
        tokens.revoke(first_secret, first)
        client.list_workflows(SELECTOR)
        assert _calls(tmp_path) == 2
        client.list_workflows(SELECTOR)
        assert _calls(tmp_path) == 2  # no expiry given: the credential is kept while it is accepted
    finally:
        client.close()


def test_an_exec_credential_is_renewed_before_it_expires(cluster: Cluster, tokens: Tokens, tmp_path: Path) -> None:
    token, _ = tokens.issue()
    (tmp_path / "token").write_text(token)
    (tmp_path / "expiry").write_text("2000-01-01T00:00:00Z")  # already within the renewal margin
    client = KubeClient(KubeConfig.load(_exec_kubeconfig(cluster, tmp_path)), NAMESPACE)
    try:
        before = _calls(tmp_path)
        client.list_workflows(SELECTOR)
        client.list_workflows(SELECTOR)
        assert _calls(tmp_path) >= before + 2  # each request found the credential expiring and asked again
    finally:
        client.close()


def test_a_plugin_that_gives_nothing_valid_fails_with_401(cluster: Cluster, tokens: Tokens, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("not-a-token")
    client = KubeClient(KubeConfig.load(_exec_kubeconfig(cluster, tmp_path)), NAMESPACE)
    try:
        with pytest.raises(KubeApiError) as refused:
            client.list_workflows(SELECTOR)
        assert refused.value.code == 401
        assert _calls(tmp_path) == 2  # asked once more, then the refusal is the answer
    finally:
        client.close()


def _pod_account(cluster: Cluster, tokens: Tokens, folder: Path) -> tuple[KubeClient, Path, str, str]:
    """A client with the in-cluster credentials of a pod whose ServiceAccount folder holds a fresh token:
    the client, the folder, the token and the Secret it is bound to."""
    token, secret = tokens.issue()
    client, account = cluster.token_client(token, folder)
    return client, account, token, secret


def test_a_rotated_service_account_token_is_used_in_cluster(cluster: Cluster, tokens: Tokens, tmp_path: Path) -> None:
    client, account, first, first_secret = _pod_account(cluster, tokens, tmp_path)
    try:
        client.list_workflows(SELECTOR)
        # the kubelet writes the new token (an atomic swap), and the old one stops being accepted
        second, _ = tokens.issue()
        (account / "token.new").write_text(second)
        os.replace(account / "token.new", account / "token")
        tokens.revoke(first_secret, first)
        client.list_workflows(SELECTOR)
    finally:
        client.close()


def test_a_revoked_in_cluster_token_is_refused_with_401(cluster: Cluster, tokens: Tokens, tmp_path: Path) -> None:
    """The check above can fail: without a new token the revoked one is refused."""
    client, _, token, secret = _pod_account(cluster, tokens, tmp_path)
    try:
        client.list_workflows(SELECTOR)
        tokens.revoke(secret, token)
        with pytest.raises(KubeApiError) as refused:
            client.list_workflows(SELECTOR)
        assert refused.value.code == 401
        assert json.dumps(str(refused.value)).find(token) == -1  # the token never appears in a message
    finally:
        client.close()
