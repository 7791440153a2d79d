"""Release the Workflows of finished jobs on a thread of their own: delete the fetch Secret, then drop the
``mirror`` finalizer.

The watcher commits a job's final state, then :meth:`Releaser.offer` s its Workflow here and goes on with the next
event: the watch never waits for the two API calls a release takes (half the watch thread's time while 1,000 jobs
finish, ``bench/argo_scale.py``).

* A Workflow is released at most once at a time, from its newest offered metadata (only that is kept); offering it
  again while it waits changes nothing else.
* A release that fails (the API refuses or is away) keeps the Workflow's finalizer and Secret, counts a
  ``release`` error and is tried again after 1 s, doubling to 60 s; every later event or list of the Workflow
  offers it again. Releases still waiting when the watcher stops are offered again by the next watcher's list.
* Failures are logged one warning a minute at most, which counts them and names the last (a cluster that
  refuses every release, e.g. a Role without ``delete`` on Secrets, would otherwise log a line per Workflow and
  retry); each failure is logged at debug level.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from workflows.argo.kube import KubeClient
from workflows.argo.objects import FINALIZER, secret_name
from workflows.exceptions import KubeApiError
from workflows.metrics import EngineMetrics

log = logging.getLogger(__name__)
FIRST_RETRY = 1.0
LAST_RETRY = 60.0
WARN_EVERY = 60.0  # seconds between two warnings about failed releases


@dataclass
class _Waiting:
    workflow: dict[str, Any]
    due: float  # time.monotonic()
    failures: int = 0


class Releaser:
    """Finished jobs' Workflows waiting for their release, and the loop that releases them."""

    def __init__(self, client: KubeClient, metrics: EngineMetrics) -> None:
        self.client = client
        self.metrics = metrics
        self._waiting: dict[str, _Waiting] = {}
        self._changed = threading.Condition()
        self._unreported = 0  # failures since the last warning
        self._next_warning = 0.0  # time.monotonic() from which the next warning may be logged

    def offer(self, workflow: dict[str, Any]) -> None:
        """The job of ``workflow`` is final in Postgres: release the Workflow (if it still has the finalizer)."""
        meta = workflow["metadata"]
        if FINALIZER not in (meta.get("finalizers") or []):
            return
        name = str(meta["name"])
        kept = {"metadata": {key: meta.get(key) for key in ("name", "finalizers", "resourceVersion")}}  # all it uses
        with self._changed:
            waiting = self._waiting.get(name)
            if waiting is None:
                self._waiting[name] = _Waiting(kept, time.monotonic())
                self._changed.notify()
            else:
                waiting.workflow = kept

    @property
    def waiting(self) -> int:
        """How many Workflows wait for their release."""
        with self._changed:
            return len(self._waiting)

    def run(self, stop: threading.Event) -> None:
        """Release Workflows as they become due, until ``stop``."""
        while not stop.is_set():
            self.release_due()
            with self._changed:
                due = min((w.due for w in self._waiting.values()), default=None)
                pause = 1.0 if due is None else min(max(due - time.monotonic(), 0.0), 1.0)
                if pause > 0:
                    self._changed.wait(pause)

    def release_due(self) -> int:
        """Release every waiting Workflow that is due now; the number released."""
        now = time.monotonic()
        with self._changed:
            due = [(name, w.workflow) for name, w in self._waiting.items() if w.due <= now]
        released = 0
        last_failure: str | None = None
        for name, workflow in due:
            try:
                self.release(workflow)
            except KubeApiError as exc:
                self.metrics.error("release")
                with self._changed:
                    waiting = self._waiting[name]
                    waiting.failures += 1
                    retry = min(FIRST_RETRY * 2 ** (waiting.failures - 1), LAST_RETRY)
                    waiting.due = time.monotonic() + retry
                log.debug("workflow %s: release failed (%s); trying again in %.0f s", name, exc, retry)
                self._unreported += 1
                last_failure = f"{name}: {exc}"
                continue
            with self._changed:
                self._waiting.pop(name, None)
            released += 1
        if last_failure is not None:
            self._warn(last_failure)
        return released

    def _warn(self, last_failure: str) -> None:
        """A warning for the failures since the last one, unless that was less than a minute ago."""
        now = time.monotonic()
        if now < self._next_warning:
            return
        log.warning(
            "%d workflow release(s) failed since the last warning, the last %s; each is tried again after a "
            "while (at most %.0f s)",
            self._unreported,
            last_failure,
            LAST_RETRY,
        )
        self._unreported = 0
        self._next_warning = now + WARN_EVERY

    def release(self, workflow: dict[str, Any]) -> None:
        """Delete the Workflow's fetch Secret, then remove its finalizer (KubeApiError when the API refuses)."""
        name = str(workflow["metadata"]["name"])
        try:
            self.client.delete_secret(secret_name(name))
        except KubeApiError as exc:
            if exc.code != 404:
                raise
        for _ in range(5):  # optimistic concurrency: Argo may update the object meanwhile
            meta = workflow["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if FINALIZER not in finalizers:
                return
            patch = {
                "metadata": {
                    "finalizers": [f for f in finalizers if f != FINALIZER],
                    "resourceVersion": meta["resourceVersion"],
                }
            }
            try:
                self.client.patch_workflow(name, patch)
                return
            except KubeApiError as exc:
                if exc.code == 404:
                    return
                if exc.code != 409:
                    raise
            workflow = self.client.get_workflow(name)
        raise KubeApiError(409, f"workflow {name}: the finalizer could not be removed (the object kept changing)")
