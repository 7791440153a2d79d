"""The argo engine's access to the Kubernetes API (Workflows, Secrets, pods), through the official
``kubernetes`` client.

Why the Kubernetes API rather than Argo Server (Hera's ``WorkflowsService``): the watcher needs
``list`` + ``watch`` with ``resourceVersion`` and a clean ``410 Gone`` signal, which only the
apiserver gives; submitting through the same API means one client and one identity (the engine's
ServiceAccount, least-privilege RBAC in ``manifests/``) and no dependency on Argo Server being up
(it stays optional, for the UI).

Credentials: a kubeconfig is read by the client's own loader, so everything kubectl accepts works,
exec credential plugins included (how EKS, GKE and AKS authenticate): a credential the plugin gives
with an expiry is renewed before it expires, and any credential the apiserver stops accepting (401)
is asked for again once per failed call. In a pod, the ServiceAccount token file is read again whenever
it changes (the kubelet rotates projected tokens), before the next request. Certificates and keys of the
kubeconfig given inline (``*-data``) or by an exec plugin are written by the loader into a private
folder (0700, files 0600) for the life of the process: OpenSSL and urllib3 load a client key from a
file, on each new connection. A CA certificate is held in memory.

Every failure is a :class:`~workflows.exceptions.KubeApiError` with the HTTP status (0: no answer),
:class:`~workflows.exceptions.KubeGoneError` for 410; objects go in and come out as plain dicts in the
API's own JSON shape.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import InClusterConfigLoader

from workflows.exceptions import KubeApiError, KubeConfigError, KubeGoneError

GROUP = "argoproj.io"
VERSION = "v1alpha1"
PLURAL = "workflows"
IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")
MERGE_PATCH = "application/merge-patch+json"
FOLLOW_READ_TIMEOUT = 24 * 3600.0  # seconds a followed log may stay silent
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"  # a list of metadata only
T = TypeVar("T")

_material_lock = threading.Lock()
_material: Path | None = None
MATERIAL_PREFIX = "c2d-kube-"


def _material_dir() -> str:
    """The process's private folder (0700) for the loader's certificate and key files, removed at exit.
    Folders of processes that are gone (killed before their exit handlers ran) are removed first."""
    global _material
    with _material_lock:
        if _material is None:
            root = Path(tempfile.gettempdir())
            for old in root.glob(f"{MATERIAL_PREFIX}*-*"):
                pid = old.name.removeprefix(MATERIAL_PREFIX).partition("-")[0]
                if pid.isdigit() and not Path(f"/proc/{pid}").exists() and old.lstat().st_uid == os.getuid():
                    shutil.rmtree(old, ignore_errors=True)  # refuses a symlink; what it cannot remove stays
            _material = Path(tempfile.mkdtemp(prefix=f"{MATERIAL_PREFIX}{os.getpid()}-"))
            atexit.register(shutil.rmtree, _material, True)
        return str(_material)


@dataclass
class _TokenFile:
    """A bearer token read from a file, read again when the file changes (a rotated ServiceAccount token)."""

    path: Path
    seen: tuple[int, int, int] | None = None
    token: str = ""

    def current(self) -> str:
        try:
            info = self.path.stat()
            key = (info.st_ino, info.st_mtime_ns, info.st_size)
            if key != self.seen:
                self.token, self.seen = self.path.read_text(encoding="utf-8").strip(), key
        except OSError as exc:
            raise KubeConfigError(f"cannot read the ServiceAccount token: {exc.strerror}") from None
        return self.token


@dataclass(frozen=True)
class KubeConfig:
    """Where the credentials come from: a kubeconfig file (its current context, or ``context``), or the
    pod's ServiceAccount (``in_cluster``; ``service_host`` and ``service_port`` default to the
    ``KUBERNETES_SERVICE_*`` environment the kubelet sets)."""

    kubeconfig: Path | None = None
    context: str | None = None
    service_account: Path = IN_CLUSTER
    service_host: str | None = None
    service_port: str | None = None

    @classmethod
    def load(cls, kubeconfig: Path | None) -> KubeConfig:
        """From a kubeconfig file, or the in-cluster ServiceAccount when None. Nothing is read yet."""
        return cls(kubeconfig=kubeconfig)

    @property
    def in_cluster(self) -> bool:
        return self.kubeconfig is None

    def configuration(self) -> k8s.Configuration:
        """A client configuration with these credentials. KubeConfigError when they are not usable."""
        configuration = k8s.Configuration()
        if self.kubeconfig is None:
            self._load_in_cluster(configuration)
        else:
            self._load_kubeconfig(configuration, self.kubeconfig)
        _hold_ca_in_memory(configuration)
        _check_tls(configuration)
        return configuration

    def _load_kubeconfig(self, configuration: k8s.Configuration, path: Path) -> None:
        if not path.is_file():
            raise KubeConfigError(f"the kubeconfig {path} does not exist")
        try:
            k8s_config.load_kube_config(
                config_file=str(path),
                context=self.context,
                client_configuration=configuration,
                persist_config=False,
                temp_file_path=_material_dir(),
            )
        except (ConfigException, OSError, ValueError) as exc:
            raise KubeConfigError(f"the kubeconfig {path} is not usable: {exc}") from None
        # the loader keeps a tokenFile's final newline (kubectl trims it), and sets it again on each request
        loaded = configuration.refresh_api_key_hook

        def trimmed(config: k8s.Configuration) -> None:
            if loaded is not None:
                loaded(config)
            if token := config.api_key.get("BearerToken"):
                config.api_key["BearerToken"] = token.strip()

        trimmed(configuration)
        configuration.refresh_api_key_hook = trimmed
        if _uses_exec_plugin(path, self.context) and not (
            configuration.api_key.get("BearerToken") or configuration.cert_file
        ):  # the loader logs a failed plugin and goes on without a credential
            raise KubeConfigError(f"the kubeconfig {path}'s exec credential plugin gave no credential (see the log)")

    def _load_in_cluster(self, configuration: k8s.Configuration) -> None:
        token, ca = self.service_account / "token", self.service_account / "ca.crt"
        environ = dict(os.environ)
        if self.service_host is not None:
            environ["KUBERNETES_SERVICE_HOST"] = self.service_host
        if self.service_port is not None:
            environ["KUBERNETES_SERVICE_PORT"] = self.service_port
        if not token.is_file():
            raise KubeConfigError(f"no kubeconfig given and no in-cluster ServiceAccount token at {token}")
        loader = InClusterConfigLoader(
            token_filename=str(token), cert_filename=str(ca), try_refresh_token=False, environ=environ
        )
        try:
            loader.load_and_set(configuration)
        except (ConfigException, OSError) as exc:
            raise KubeConfigError(f"the in-cluster ServiceAccount is not usable: {exc}") from None
        source = _TokenFile(token)

        def refresh(config: k8s.Configuration) -> None:
            config.api_key["BearerToken"] = f"Bearer {source.current()}"

        refresh(configuration)
        configuration.refresh_api_key_hook = refresh


def _hold_ca_in_memory(configuration: k8s.Configuration) -> None:
    """An inline CA certificate the loader wrote into the material folder is held in memory instead
    (urllib3 takes CA data; only a client key must be a file)."""
    ca = configuration.ssl_ca_cert
    if ca and _material is not None and Path(ca).parent == _material:
        configuration.ca_cert_data = Path(ca).read_text(encoding="ascii")
        configuration.ssl_ca_cert = None
        if ca not in (configuration.cert_file, configuration.key_file):  # the loader shares files by content
            Path(ca).unlink(missing_ok=True)  # and writes one again when it needs it


def _check_tls(configuration: k8s.Configuration) -> None:
    """Load the TLS material as a connection will, so that an unusable file fails now, with its name."""
    if not configuration.host.startswith("https:"):
        return
    try:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert, cadata=configuration.ca_cert_data)
        if configuration.cert_file or configuration.key_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise KubeConfigError(f"the kubeconfig's TLS material is not usable: {exc}") from None


def _uses_exec_plugin(path: Path, context: str | None) -> bool:
    """Whether the kubeconfig's user (of ``context`` or the current one) authenticates with an exec plugin."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        name = context or doc.get("current-context")
        chosen = next(c for c in doc.get("contexts") or [] if c.get("name") == name)
        user = next(u for u in doc.get("users") or [] if u.get("name") == (chosen.get("context") or {}).get("user"))
    except (OSError, yaml.YAMLError, AttributeError, StopIteration):
        return False
    return bool((user.get("user") or {}).get("exec"))


class KubeClient:
    """Namespaced access to Workflows, Secrets and pods. Thread-safe (one connection pool)."""

    def __init__(self, config: KubeConfig, namespace: str, timeout: float = 30.0) -> None:
        self.config = config
        self.namespace = namespace
        self.timeout = timeout
        self.api = k8s.ApiClient(config.configuration())
        self.custom = k8s.CustomObjectsApi(self.api)
        self.core = k8s.CoreV1Api(self.api)
        self._lock = threading.Lock()
        self._watches: set[k8s_watch.Watch] = set()
        self._interrupted = False

    def close(self) -> None:
        """Close the connections; a watch blocked in another thread ends at once (KubeApiError there)."""
        self.interrupt_streams()
        self.api.close()

    def interrupt_streams(self) -> None:
        """End every watch blocked in another thread (KubeApiError there); other calls keep working."""
        with self._lock:
            self._interrupted = True  # and no new watch starts
            watches = list(self._watches)
        for watch in watches:
            watch.stop()  # shuts the socket down: a blocked read returns

    # -- requests -------------------------------------------------------------------------------
    def _call(self, what: str, request: Callable[[], T]) -> T:
        """``request()``, its failures as KubeApiError; a 401 from a kubeconfig's credential is retried once
        with the credential loaded again (an exec plugin's token the apiserver stopped accepting)."""
        for attempt in (1, 2):
            try:
                return request()
            except ApiException as exc:
                if exc.status == 401 and attempt == 1 and not self.config.in_cluster:
                    self._reload_credentials()
                    continue
                raise _api_error(what, exc) from None
            except urllib3.exceptions.HTTPError as exc:
                raise KubeApiError(0, f"{what}: {exc}") from None
        raise AssertionError("unreachable")

    def _reload_credentials(self) -> None:
        fresh = self.config.configuration()
        current = self.api.configuration
        current.api_key = fresh.api_key
        current.refresh_api_key_hook = fresh.refresh_api_key_hook

    def _json(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """``method(*args, **kwargs)`` of a typed API, its body read as the API's JSON (no model objects)."""
        response = self._call(
            what, lambda: method(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        )
        try:
            body: dict[str, Any] = json.loads(response.data)
        finally:
            response.release_conn()
        return body

    def _custom(self, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            what,
            lambda: method(GROUP, VERSION, self.namespace, PLURAL, *args, _request_timeout=self.timeout, **kwargs),
        )
        return result

    def create_workflow(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._custom("POST workflow", self.custom.create_namespaced_custom_object, body)

    def get_workflow(self, name: str) -> dict[str, Any]:
        return self._custom(f"GET workflow {name}", self.custom.get_namespaced_custom_object, name)

    def list_workflows(self, selector: str, limit: int = 500) -> tuple[list[dict[str, Any]], str]:
        """Every matching Workflow (paged) and the list's resourceVersion to watch from."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = self._custom(
                "LIST workflows",
                self.custom.list_namespaced_custom_object,
                label_selector=selector,
                limit=limit,
                _continue=token,
            )
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            token = meta.get("continue")
            if not token:
                return items, str(meta.get("resourceVersion", ""))

    def patch_workflow(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._custom(
            f"PATCH workflow {name}", self.custom.patch_namespaced_custom_object, name, patch, _content_type=MERGE_PATCH
        )

    def delete_workflow(self, name: str) -> None:
        self._custom(
            f"DELETE workflow {name}",
            self.custom.delete_namespaced_custom_object,
            name,
            propagation_policy="Background",
        )

    def create_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._json("POST secret", self.core.create_namespaced_secret, self.namespace, body)

    def get_secret(self, name: str) -> dict[str, Any]:
        return self._json(f"GET secret {name}", self.core.read_namespaced_secret, name, self.namespace)

    def patch_secret(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self._json(
            f"PATCH secret {name}",
            self.core.patch_namespaced_secret,
            name,
            self.namespace,
            patch,
            _content_type=MERGE_PATCH,
        )

    def delete_secret(self, name: str) -> None:
        self._json(f"DELETE secret {name}", self.core.delete_namespaced_secret, name, self.namespace)

    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        page = self._json("LIST pods", self.core.list_namespaced_pod, self.namespace, label_selector=selector)
        return list(page.get("items") or [])

    def list_pod_metadata(self, selector: str) -> list[dict[str, Any]]:
        """The ``metadata`` of each matching pod, without spec or status (a tenth of the bytes), from the
        apiserver's watch cache (it may lag by a moment; etcd is not read)."""
        page = self._json(
            "LIST pod metadata",
            self.core.list_namespaced_pod,
            self.namespace,
            label_selector=selector,
            resource_version="0",
            _headers={"Accept": METADATA_LIST},
        )
        return [item.get("metadata") or {} for item in page.get("items") or []]

    def get_pod(self, name: str) -> dict[str, Any]:
        return self._json(f"GET pod {name}", self.core.read_namespaced_pod, name, self.namespace)

    def pod_log_lines(self, pod: str, container: str) -> Iterator[str]:
        """A container's log, line by line, streamed (never read whole into memory)."""
        what = f"GET log of pod {pod}"
        response = self._call(
            what,
            lambda: self.core.read_namespaced_pod_log(
                pod, self.namespace, container=container, _preload_content=False, _request_timeout=self.timeout
            ),
        )
        try:
            yield from k8s_watch.watch.iter_resp_lines(response)
        except urllib3.exceptions.HTTPError as exc:
            raise KubeApiError(0, f"{what}: {exc}") from None
        finally:
            response.release_conn()

    def follow_pod_log(self, pod: str, container: str) -> urllib3.BaseHTTPResponse:
        """A container's log from its start, followed while the container runs: the open response, read by the
        caller (``read1``), who releases it (``close``; ``shutdown`` ends a read blocked in another thread).
        The read timeout is :data:`FOLLOW_READ_TIMEOUT` (the client refuses none at all): a container may be
        silent for long; a follow silent longer than that ends (a new request reads it again from its start)."""
        response: urllib3.BaseHTTPResponse = self._call(
            f"GET log of pod {pod}",
            lambda: self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                container=container,
                follow=True,
                _preload_content=False,
                _request_timeout=(self.timeout, FOLLOW_READ_TIMEOUT),
            ),
        )
        return response

    def watch_workflows(self, selector: str, resource_version: str, timeout_seconds: int) -> Iterator[dict[str, Any]]:
        """Watch events (``type``, ``object``: the Workflow as a dict) from ``resource_version``; bookmarks
        included. The watch ends after ``timeout_seconds`` (the server closes it).

        Raises :class:`KubeGoneError` when the version is too old (HTTP 410 or an ERROR event with
        code 410): the caller must list again.
        """
        watch = k8s_watch.Watch()
        with self._lock:
            if self._interrupted:
                raise KubeApiError(0, "WATCH workflows: the client is closing")
            self._watches.add(watch)

        def list_call(**kwargs: Any) -> Any:
            # typed Any on purpose: the Watch finds no model type to convert the objects to, so each event's
            # JSON is parsed once and its object handed on as a dict
            return self.custom.list_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, **kwargs)

        try:
            events = watch.stream(
                list_call,
                label_selector=selector,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=timeout_seconds,
                _request_timeout=(10.0, timeout_seconds + 30),
            )
            for event in events:
                if event is None:  # the client's reading of a blank line in the stream: no event
                    continue
                yield {"type": event["type"], "object": event["raw_object"]}
        except ApiException as exc:
            raise _api_error("WATCH workflows", exc) from None
        except urllib3.exceptions.HTTPError as exc:
            if not self._interrupted:
                raise KubeApiError(0, f"WATCH workflows: {exc}") from None
        finally:
            with self._lock:
                self._watches.discard(watch)
        if self._interrupted:
            raise KubeApiError(0, "WATCH workflows: the client is closing")


def _api_error(what: str, exc: ApiException) -> KubeApiError:
    code = int(exc.status or 0)
    message = str(exc.reason or "")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        message = str(json.loads(exc.body).get("message") or message)
    text = f"{what}: HTTP {code}: {message[:500]}"
    return KubeGoneError(code, text) if code == 410 else KubeApiError(code, text)
