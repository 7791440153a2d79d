"""A small typed client for the Kubernetes API: the Workflow CRD, Secrets and pod logs.

Why the Kubernetes API rather than Argo Server (Hera's ``WorkflowsService``): the watcher needs
``list`` + ``watch`` with ``resourceVersion`` and a clean ``410 Gone`` signal, which only the
apiserver gives; submitting through the same API means one client and one identity (the engine's
ServiceAccount, least-privilege RBAC in ``manifests/``) and no dependency on Argo Server being up
(it stays optional, for the UI). Plain REST over httpx: every request and its failure are explicit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from workflows.exceptions import KubeApiError, KubeConfigError, KubeGoneError

GROUP = "argoproj.io"
VERSION = "v1alpha1"
IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and how to trust it and authenticate. TLS material is held as PEM bytes,
    read from the kubeconfig's files or its inline ``*-data`` fields: none of it stays on disk."""

    server: str
    token: str | None = None
    ca_pem: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    insecure: bool = False

    @classmethod
    def load(cls, kubeconfig: Path | None) -> KubeConfig:
        """From a kubeconfig file (current context), or the in-cluster ServiceAccount when None."""
        return cls.from_kubeconfig(kubeconfig) if kubeconfig is not None else cls.in_cluster()

    @classmethod
    def in_cluster(cls) -> KubeConfig:
        token = IN_CLUSTER / "token"
        if not token.is_file():
            raise KubeConfigError(f"no kubeconfig given and no in-cluster ServiceAccount token at {token}")
        return cls(
            server="https://kubernetes.default.svc",
            token=token.read_text().strip(),
            ca_pem=_read(IN_CLUSTER / "ca.crt", "ServiceAccount CA"),
        )

    @classmethod
    def from_kubeconfig(cls, path: Path) -> KubeConfig:
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise KubeConfigError(f"cannot read kubeconfig {path}: {exc}") from exc
        try:
            context = _named(doc["contexts"], doc["current-context"])["context"]
            cluster = _named(doc["clusters"], context["cluster"])["cluster"]
            user = _named(doc["users"], context["user"])["user"] or {}
        except (KeyError, TypeError) as exc:
            raise KubeConfigError(f"kubeconfig {path} has no usable current context ({exc})") from exc
        base = path.parent
        token = user.get("token")
        if token is None and user.get("tokenFile"):
            token = _read(base / str(user["tokenFile"]), "tokenFile").decode().strip()
        return cls(
            server=str(cluster["server"]).rstrip("/"),
            token=token,
            ca_pem=_material(base, cluster, "certificate-authority"),
            cert_pem=_material(base, user, "client-certificate"),
            key_pem=_material(base, user, "client-key"),
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        try:
            context = ssl.create_default_context(cadata=self.ca_pem.decode("ascii") if self.ca_pem else None)
            if self.cert_pem and self.key_pem:
                _load_client_identity(context, self.cert_pem, self.key_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise KubeConfigError(f"the kubeconfig's TLS material is not usable: {exc}") from exc
        return context


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise KeyError(name)


def _material(base: Path, section: dict[str, Any], key: str) -> bytes | None:
    """The bytes of ``key`` (a file, relative to ``base``) or of ``key-data`` (inline base64)."""
    if section.get(key):
        return _read(base / str(section[key]), key)
    data = section.get(f"{key}-data")
    if not data:
        return None
    try:
        return base64.b64decode(data, validate=True)
    except ValueError as exc:
        raise KubeConfigError(f"{key}-data is not base64: {exc}") from exc


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KubeConfigError(f"cannot read the kubeconfig's {what} {path}: {exc}") from exc


def _load_client_identity(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """OpenSSL loads a client certificate and key only from files: they are written into a private
    folder (0700) and removed as soon as the context holds them."""
    with tempfile.TemporaryDirectory(prefix="c2d-kube-") as folder:
        cert, key = Path(folder) / "client.crt", Path(folder) / "client.key"
        for path, pem in ((cert, cert_pem), (key, key_pem)):
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as handle:
                handle.write(pem)
        context.load_cert_chain(cert, key)


class KubeClient:
    """Namespaced access to Workflows, Secrets and pods. Thread-safe (httpx.Client is)."""

    def __init__(self, config: KubeConfig, namespace: str, timeout: float = 30.0) -> None:
        self.namespace = namespace
        headers = {"Accept": "application/json"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self.http = httpx.Client(base_url=config.server, headers=headers, verify=config.ssl_context(), timeout=timeout)
        self._lock = threading.Lock()
        self._streams: set[httpx.Response] = set()
        self._interrupted = False

    def close(self) -> None:
        """Close the connections; a watch blocked in another thread ends at once (KubeApiError)."""
        self.interrupt_streams()
        self.http.close()

    def interrupt_streams(self) -> None:
        """End every watch blocked in another thread (KubeApiError there); other calls keep working."""
        with self._lock:
            self._interrupted = True  # and no new watch starts
            streams = list(self._streams)
        for response in streams:  # a blocked recv() returns only when its socket is shut down
            network = response.extensions.get("network_stream")
            sock = network.get_extra_info("socket") if network is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    # -- paths ----------------------------------------------------------------------------------
    def _workflows(self, name: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/workflows"
        return f"{path}/{name}" if name else path

    def _secrets(self, name: str = "") -> str:
        path = f"/api/v1/namespaces/{self.namespace}/secrets"
        return f"{path}/{name}" if name else path

    # -- requests -------------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise KubeApiError(0, f"{method} {path}: {exc}") from exc
        if response.status_code >= 400:
            raise _api_error(method, path, response.status_code, response.text)
        result: dict[str, Any] = response.json()
        return result

    def create_workflow(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", self._workflows(), json=body)

    def get_workflow(self, name: str) -> dict[str, Any]:
        return self._call("GET", self._workflows(name))

    def list_workflows(self, selector: str, limit: int = 500) -> tuple[list[dict[str, Any]], str]:
        """Every matching Workflow (paged) and the list's resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"labelSelector": selector, "limit": limit}
        while True:
            page = self._call("GET", self._workflows(), params=params)
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                return items, str(meta.get("resourceVersion", ""))
            params["continue"] = meta["continue"]

    def patch_workflow(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        return self._call("PATCH", self._workflows(name), content=json.dumps(patch), headers=headers)

    def delete_workflow(self, name: str) -> None:
        self._call("DELETE", self._workflows(name), json={"propagationPolicy": "Background"})

    def create_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", self._secrets(), json=body)

    def patch_secret(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        return self._call("PATCH", self._secrets(name), content=json.dumps(patch), headers=headers)

    def delete_secret(self, name: str) -> None:
        self._call("DELETE", self._secrets(name))

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        page = self._call("GET", f"/api/v1/namespaces/{self.namespace}/pods", params={"labelSelector": selector})
        return list(page.get("items") or [])

    def pod_log_lines(self, pod: str, container: str) -> Iterator[str]:
        """A container's log, line by line, streamed (never read whole into memory)."""
        path = f"/api/v1/namespaces/{self.namespace}/pods/{pod}/log"
        try:
            with self.http.stream("GET", path, params={"container": container}) as response:
                if response.status_code >= 400:
                    raise _api_error("GET", path, response.status_code, response.read().decode(errors="replace"))
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise KubeApiError(0, f"GET {path}: {exc}") from exc

    def watch_workflows(self, selector: str, resource_version: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        """Watch events (``type``, ``object``) from ``resource_version``; bookmarks included.

        Raises :class:`KubeGoneError` when the version is too old (HTTP 410 or an ERROR event with
        code 410): the caller must list again.
        """
        params = {
            "watch": "1",
            "labelSelector": selector,
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        path = self._workflows()
        try:
            timeout = httpx.Timeout(10.0, read=timeout_seconds + 30)
            with self.http.stream("GET", path, params=params, timeout=timeout) as r:
                if r.status_code >= 400:
                    raise _api_error("GET", path, r.status_code, r.read().decode(errors="replace"))
                with self._lock:
                    if self._interrupted:
                        raise KubeApiError(0, f"WATCH {path}: the client is closing")
                    self._streams.add(r)
                try:
                    for line in r.iter_lines():
                        if not line:
                            continue
                        event: dict[str, Any] = json.loads(line)
                        if event.get("type") == "ERROR":
                            status = event.get("object") or {}
                            code = int(status.get("code") or 500)
                            raise _api_error("WATCH", path, code, str(status.get("message")))
                        yield event
                finally:
                    with self._lock:
                        self._streams.discard(r)
        except (httpx.HTTPError, httpx.StreamError) as exc:
            raise KubeApiError(0, f"WATCH {path}: {exc}") from exc


def _api_error(method: str, path: str, code: int, body: str) -> KubeApiError:
    message = body
    with contextlib.suppress(ValueError, AttributeError):
        message = str(json.loads(body).get("message") or body)
    text = f"{method} {path}: HTTP {code}: {message[:500]}"
    return KubeGoneError(code, text) if code == 410 else KubeApiError(code, text)
