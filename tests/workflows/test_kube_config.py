"""The argo engine's credentials as the official client loads them: kubeconfig TLS material from files or
inline data (inline material in a private folder only), clear errors for unusable material or a failing exec
plugin, a rotated ServiceAccount token read again. (Against a real apiserver: tests/e2e/test_kube_auth.py.)

``tls/`` holds a self-signed certificate and its key made for these tests only (``openssl req -x509
-newkey ec``); it serves as both the cluster's CA and the client's identity.
"""

from __future__ import annotations

import base64
import os
import stat
import sys
from pathlib import Path

import pytest
import yaml

from workflows.argo.kube import KubeConfig
from workflows.exceptions import KubeConfigError

TLS = Path(__file__).parent / "tls"


def _inline(name: str) -> str:
    return base64.b64encode((TLS / name).read_bytes()).decode()


def _kubeconfig(folder: Path, cluster: dict[str, object], user: dict[str, object]) -> Path:
    cluster = {"server": "https://127.0.0.1:6443/", **cluster}
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return path


def _private(path: str) -> bytes:
    """The bytes of a file the loader wrote: it must be 0600 in a folder only its owner can enter."""
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    return Path(path).read_bytes()


def test_inline_material_lands_in_a_private_folder(tmp_path: Path) -> None:
    path = _kubeconfig(
        tmp_path,
        {"certificate-authority-data": _inline("client.crt")},
        {"client-certificate-data": _inline("client.crt"), "client-key-data": _inline("client.key")},
    )
    configuration = KubeConfig.load(path).configuration()
    assert configuration.host == "https://127.0.0.1:6443"
    assert configuration.ssl_ca_cert is None  # the CA is held in memory
    assert configuration.ca_cert_data.encode() == (TLS / "client.crt").read_bytes()
    assert _private(configuration.cert_file) == (TLS / "client.crt").read_bytes()
    assert _private(configuration.key_file) == (TLS / "client.key").read_bytes()


def test_files_are_read_relative_to_the_kubeconfig(tmp_path: Path) -> None:
    for name in ("client.crt", "client.key"):
        (tmp_path / name).write_bytes((TLS / name).read_bytes())
    (tmp_path / "token").write_text("secret-token\n")
    path = _kubeconfig(
        tmp_path,
        {"certificate-authority": "client.crt"},
        {"client-certificate": "client.crt", "client-key": "client.key", "tokenFile": "token"},
    )
    configuration = KubeConfig.load(path).configuration()
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer secret-token"
    assert configuration.ssl_ca_cert == str(tmp_path / "client.crt")  # used where it is, not copied


@pytest.mark.parametrize(
    ("cluster", "user", "message"),
    [
        ({"certificate-authority-data": "not base64!"}, {}, "is not usable"),
        ({"certificate-authority": "missing.crt"}, {}, "is not usable"),
        ({"certificate-authority-data": _inline("client.key")}, {}, "TLS material is not usable"),
        (
            {"certificate-authority-data": _inline("client.crt")},
            {"client-certificate-data": _inline("client.crt"), "client-key-data": _inline("client.crt")},
            "TLS material is not usable",
        ),
        (
            {"insecure-skip-tls-verify": True},
            {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "false"}},
            "exec credential plugin gave no credential",
        ),
    ],
)
def test_unusable_credentials_are_a_config_error(
    tmp_path: Path, cluster: dict[str, object], user: dict[str, object], message: str
) -> None:
    with pytest.raises(KubeConfigError, match=message):
        KubeConfig.load(_kubeconfig(tmp_path, cluster, user)).configuration()


def test_a_missing_kubeconfig_says_so(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="does not exist"):
        KubeConfig.load(tmp_path / "nowhere").configuration()


def test_an_exec_plugin_token_is_used(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json\n"
        'print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",'
        ' "status": {"token": "from-plugin"}}))\n'
    )
    exec_user: dict[str, object] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "interactiveMode": "Never",
        }
    }
    path = _kubeconfig(tmp_path, {"insecure-skip-tls-verify": True}, exec_user)
    configuration = KubeConfig.load(path).configuration()
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer from-plugin"


def test_a_rotated_service_account_token_is_read_again(tmp_path: Path) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes((TLS / "client.crt").read_bytes())
    (account / "token").write_text("first\n")
    config = KubeConfig(service_account=account, service_host="127.0.0.1", service_port="6443")
    configuration = config.configuration()
    assert configuration.host == "https://127.0.0.1:6443"
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer first"
    # the kubelet swaps the projected volume's files atomically
    (account / "token.new").write_text("second\n")
    os.replace(account / "token.new", account / "token")
    assert configuration.get_api_key_with_prefix("BearerToken") == "Bearer second"


def test_no_service_account_says_so(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="no in-cluster ServiceAccount token"):
        KubeConfig(service_account=tmp_path, service_host="127.0.0.1", service_port="6443").configuration()
