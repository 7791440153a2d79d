"""The argo engine's kubeconfig: TLS material from files or inline data, none of it left on disk.

``tls/`` holds a self-signed certificate and its key made for these tests only (``openssl req -x509
-newkey ec``); it serves as both the cluster's CA and the client's identity.
"""

from __future__ import annotations

import base64
import tempfile
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


@pytest.fixture
def temp_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where ``tempfile`` writes during the test: it must be empty again afterwards."""
    root = tmp_path / "tmp"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _subjects(config: KubeConfig) -> list[object]:
    context = config.ssl_context()
    assert not isinstance(context, bool)
    return [cert["subject"] for cert in context.get_ca_certs()]


def test_inline_material_is_used_and_leaves_no_file(tmp_path: Path, temp_root: Path) -> None:
    path = _kubeconfig(
        tmp_path,
        {"certificate-authority-data": _inline("client.crt")},
        {"client-certificate-data": _inline("client.crt"), "client-key-data": _inline("client.key")},
    )
    config = KubeConfig.load(path)
    assert config.server == "https://127.0.0.1:6443"
    assert _subjects(config) == [((("commonName", "c2d-test-client"),),)]  # only the kubeconfig's CA
    assert list(temp_root.iterdir()) == []


def test_files_are_read_relative_to_the_kubeconfig(tmp_path: Path, temp_root: Path) -> None:
    for name in ("client.crt", "client.key"):
        (tmp_path / name).write_bytes((TLS / name).read_bytes())
    (tmp_path / "token").write_text("secret-token\n")
    path = _kubeconfig(
        tmp_path,
        {"certificate-authority": "client.crt"},
        {"client-certificate": "client.crt", "client-key": "client.key", "tokenFile": "token"},
    )
    config = KubeConfig.load(path)
    assert config.token == "secret-token"
    assert _subjects(config) == [((("commonName", "c2d-test-client"),),)]
    assert list(temp_root.iterdir()) == []


@pytest.mark.parametrize(
    ("cluster", "user", "message"),
    [
        ({"certificate-authority-data": "not base64!"}, {}, "certificate-authority-data is not base64"),
        ({"certificate-authority": "missing.crt"}, {}, "cannot read the kubeconfig's certificate-authority"),
        ({"certificate-authority-data": _inline("client.key")}, {}, "TLS material is not usable"),
        (
            {},
            {"client-certificate-data": _inline("client.crt"), "client-key-data": _inline("client.crt")},
            "TLS material is not usable",
        ),
    ],
)
def test_unusable_material_is_a_config_error(
    tmp_path: Path, temp_root: Path, cluster: dict[str, object], user: dict[str, object], message: str
) -> None:
    with pytest.raises(KubeConfigError, match=message):
        KubeConfig.load(_kubeconfig(tmp_path, cluster, user)).ssl_context()
    assert list(temp_root.iterdir()) == []
