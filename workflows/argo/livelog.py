"""The argo engine's live logs: the algorithm pod's log, followed through the Kubernetes API.

Used by the provider (through :class:`~workflows.livelogs.LiveLogs`), which needs ``get``/``list`` on pods and
``get`` on ``pods/log`` in the jobs' namespace (``manifests/base/rbac.yaml``, Role ``c2d-provider-logs``).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import urllib3

from c2d.db.job_records import JobRecord
from c2d.settings import Settings
from workflows import labels
from workflows.argo.kube import KubeClient, KubeConfig
from workflows.argo.objects import WORKFLOW_LABEL
from workflows.exceptions import KubeApiError
from workflows.livelogs import CHUNK_BYTES

log = logging.getLogger(__name__)
CONTAINER = "main"  # Argo's name of the step's own container
QUEUE_CHUNKS = 16  # chunks read ahead of the client: at most 1 MiB per stream
PUT_WAIT = 0.5  # seconds between checks for close() while the client does not read


class PodLogStream:
    """A followed pod log (an open ``follow=true`` response) as a :class:`~workflows.livelogs.LogStream`.

    One thread per stream reads the response into a bounded queue (:data:`QUEUE_CHUNKS` chunks of at most
    :data:`~workflows.livelogs.CHUNK_BYTES`), so :meth:`read` never blocks. The thread ends when the log
    ends (the container exited) or at :meth:`close`, which shuts the socket down under a blocked read.
    """

    def __init__(self, response: urllib3.BaseHTTPResponse) -> None:
        self._response = response
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_CHUNKS)
        self._closed = threading.Event()
        self._ended = False
        self._lock = threading.Lock()  # the response is released once, never shut down after that
        self._released = False
        self.thread = threading.Thread(target=self._pump, name="c2d-pod-log", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        try:
            while not self._closed.is_set():
                chunk = self._response.read1(CHUNK_BYTES)
                if not chunk or not self._put(chunk):
                    break
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            if not self._closed.is_set():
                log.warning("a followed pod log ended early: %s", exc)
        finally:
            with self._lock:
                self._released = True
                self._response.close()
                self._response.release_conn()
            self._put(None)

    def _put(self, item: bytes | None) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=PUT_WAIT)
                return True
            except queue.Full:
                continue
        return False

    def read(self) -> bytes | None:
        if self._ended or self._closed.is_set():
            return None
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return b""
        if item is None:
            self._ended = True
        return item

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if not self._released:
                try:
                    self._response.shutdown()  # a read blocked in the thread returns now
                except (ValueError, RuntimeError, OSError) as exc:  # no socket left to shut down
                    log.debug("pod log stream: nothing to shut down (%s)", exc)


def algorithm_pod(pods: list[dict[str, Any]]) -> str | None:
    """The name of the pod among ``pods`` whose algorithm container runs now (the latest attempt's), or None."""
    running = [
        pod
        for pod in pods
        if (pod.get("status") or {}).get("phase") == "Running"
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and any(
            status.get("name") == CONTAINER and "running" in (status.get("state") or {})
            for status in (pod.get("status") or {}).get("containerStatuses") or []
        )
    ]
    if not running:
        return None
    latest = max(running, key=lambda pod: str(pod["metadata"].get("creationTimestamp", "")))
    return str(latest["metadata"]["name"])


class PodLogs:
    """:class:`~workflows.livelogs.LiveLogs` of the argo engine's jobs. The Kubernetes client is made at the
    first request (a provider without credentials starts, and answers that it cannot read logs)."""

    def __init__(self, settings: Settings, client: KubeClient | None = None) -> None:
        self.settings = settings
        self._client = client
        self._owned = client is None
        self._lock = threading.Lock()

    @property
    def client(self) -> KubeClient:
        """KubeConfigError when the credentials are not usable."""
        with self._lock:
            if self._client is None:
                config = KubeConfig.load(self.settings.engine.argo.kubeconfig)
                self._client = KubeClient(config, self.settings.engine.namespace)
            return self._client

    def close(self) -> None:
        with self._lock:
            if self._owned and self._client is not None:
                self._client.close()
                self._client = None

    def algorithm_log(self, job: JobRecord) -> PodLogStream | None:
        if job.engine != "argo" or not job.workflow_name:
            return None
        selector = f"{WORKFLOW_LABEL}={job.workflow_name},{labels.ROLE}=algorithm"
        pod = algorithm_pod(self.client.list_pods(selector))
        if pod is None:
            return None
        try:
            return PodLogStream(self.client.follow_pod_log(pod, CONTAINER))
        except KubeApiError as exc:
            if exc.code in (400, 404):  # the pod went, or its container stopped, since it was listed
                return None
            raise
