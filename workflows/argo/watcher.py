"""Mirror Argo Workflow status into Postgres: list + watch, through the shared status mapping.

* List every job Workflow (label ``job-id``), mirror each, then watch from the list's
  resourceVersion (bookmarks keep it fresh). A ``410 Gone``, a failed event or a broken stream
  leads to a new list: the list is the truth, so nothing that happened meanwhile is lost.
* Mirroring is idempotent: :meth:`JobStore.transition` ignores a status the job already has and
  never changes a finished job, and details are written only when they differ.
* Final states cannot be lost: every job Workflow carries the ``mirror`` finalizer, which the
  watcher removes only after the final state is committed. A TTL or ``kubectl delete`` therefore
  waits for the watcher, even one that was down at the time. The removal (and the deletion of the
  fetch Secret) runs on its own thread, :meth:`Watcher.run_release`, so the watch never waits for it.
* Lost nodes: a node that stops answering changes no Workflow (Argo still shows its step Running). Job pods
  tolerate the node-lost taints for ``node_lost_grace`` only, so the cluster evicts them; every
  ``node_check_seconds`` the watcher looks for evicted job pods that no kubelet ends
  (:func:`~workflows.argo.objects.lost_pod`), fails their jobs and terminates their Workflows.
* Metrics (:class:`~workflows.metrics.WatcherMetrics`): watch events, lists, 410s, errors, and for each
  step start/end and each final state it commits, the lag from the cluster's timestamp to the commit
  and the step's duration (each once: :mod:`workflows.argo.observe`).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from c2d.db.engine_queue import SUBMITTED
from c2d.db.jobs import JobRecord, JobStore
from c2d.db.pool import Pool
from c2d.settings import Settings
from c2d.status import STOPREQ_DEADLINE, JobStatus
from workflows import labels
from workflows.argo.kube import KubeClient
from workflows.argo.objects import WORKFLOW_LABEL, ImageFailure, NodesLoader, WorkflowView, lost_pod, read
from workflows.argo.observe import StepChange, cluster_time, step_changes, templates
from workflows.argo.release import Releaser
from workflows.exceptions import EngineError, KubeApiError, KubeGoneError
from workflows.metrics import ARGO_ERRORS, STEP_FINISHED, WORKFLOW_FINISHED, EngineMetrics, WatcherMetrics

log = logging.getLogger(__name__)
SOURCE = "argo-watcher"
SELECTOR = labels.JOB_ID  # every Workflow of a job carries it
MISSING_GRACE = timedelta(seconds=30)


class Watcher:
    """``metrics``: the engine's (the watcher adds its own to its registry); a watcher of its own by default."""

    def __init__(
        self, settings: Settings, pool: Pool, client: KubeClient, metrics: EngineMetrics | None = None
    ) -> None:
        self.settings = settings
        self.store = JobStore(pool)
        self.client = client
        self.resource_version = ""
        self.events_seen = 0
        self.resyncs = 0
        self.metrics = metrics if metrics is not None else EngineMetrics("argo", ARGO_ERRORS)
        self.watch_metrics = WatcherMetrics(self.metrics.registry)
        self.releaser = Releaser(client, self.metrics)
        self.watch_metrics.releases_waiting.set_function(lambda: self.releaser.waiting)

    # -- loop -------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                if not self.resource_version:
                    self.resync()
                self.watch_once(stop)
                backoff = 0.5
            except KubeGoneError:
                self.watch_metrics.gone.inc()
                log.info("watch: resourceVersion %s expired (410); listing again", self.resource_version)
                self.resource_version = ""
            except (KubeApiError, EngineError, psycopg.Error) as exc:
                if stop.is_set():
                    return
                self.metrics.error("watch")
                log.warning("watcher: %s; listing again in %.1fs", exc, backoff)
                self.resource_version = ""
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def run_release(self, stop: threading.Event) -> None:
        """Release the Workflows of finished jobs (:class:`~workflows.argo.release.Releaser`) until ``stop``."""
        self.releaser.run(stop)

    def run_node_check(self, stop: threading.Event) -> None:
        """Every ``node_check_seconds``: :meth:`fail_lost_jobs`."""
        while not stop.wait(self.settings.engine.argo.node_check_seconds):
            try:
                self.fail_lost_jobs()
            except (KubeApiError, psycopg.Error) as exc:
                self.metrics.error("node_check")
                log.warning("watcher: node check: %s", exc)

    def fail_lost_jobs(self) -> int:
        """Fail each running job whose step's pod is on a lost node, and terminate its Workflow (Argo would wait
        for the pod for ever). A job with a stop request is left to the stop: Argo ends it without the node.
        Only pods being deleted can be lost: their names come from a metadata-only list, then each is read."""
        deleting = [m for m in self.client.list_pod_metadata(WORKFLOW_LABEL) if m.get("deletionTimestamp")]
        if not deleting:
            return 0
        running = {job.workflow_name: job for job in self.store.unfinished("argo") if job.workflow_name}
        failed = 0
        for meta in deleting:
            job = running.get(str((meta.get("labels") or {}).get(WORKFLOW_LABEL)))
            if job is None or job.stopreq:
                continue
            try:
                lost = lost_pod(self.client.get_pod(str(meta["name"])), datetime.now(UTC))
            except KubeApiError as exc:
                if exc.code == 404:
                    continue  # ended meanwhile
                raise
            if lost is None:
                continue
            running.pop(lost.workflow, None)
            if self._fail(job, f"the node running step {lost.task} was lost (its pod was {lost.reason})"):
                log.warning("job %s: node %s lost during step %s; job failed", job.job_id, lost.node, lost.task)
                failed += 1
            self._terminate(lost.workflow)
        return failed

    def resync(self) -> None:
        """List every job Workflow, mirror each; settle jobs whose Workflow is gone."""
        started = datetime.now(UTC)
        items, version = self.client.list_workflows(SELECTOR)
        seen = set()
        for item in items:
            self.handle(item)
            seen.add(str(item["metadata"]["name"]))
        self._settle_missing(seen, started)
        self.resource_version = version
        self.resyncs += 1
        self.watch_metrics.resyncs.inc()
        log.info("watcher: listed %d workflows at resourceVersion %s", len(items), version)

    def watch_once(self, stop: threading.Event) -> None:
        timeout = self.settings.engine.argo.watch_timeout
        for event in self.client.watch_workflows(SELECTOR, self.resource_version, timeout):
            obj = event.get("object") or {}
            version = (obj.get("metadata") or {}).get("resourceVersion")
            kind = event.get("type")
            self.watch_metrics.event(kind)
            if kind in ("ADDED", "MODIFIED"):
                self.handle(obj)
            elif kind == "DELETED":
                self.handle(obj, deleted=True)
            self.events_seen += 1
            if version:
                self.resource_version = str(version)
            if stop.is_set():
                return

    # -- one Workflow -------------------------------------------------------------------------------
    def handle(self, workflow: dict[str, Any], deleted: bool = False) -> None:
        """Mirror one Workflow (an event's object or a list item) into its job, then release the Workflow once
        its job is final."""
        began = time.perf_counter()
        view = read(workflow, self._nodes_loader())
        job = self.store.get(view.job_id) if view.job_id else None
        meta = workflow.get("metadata") or {}
        deleting = deleted or bool(meta.get("deletionTimestamp"))
        if job is not None and not job.finished:
            self._mirror(job, view, deleting, workflow)
            job = self.store.get(job.job_id)
        done = job is None or job.finished
        if done and not deleted:
            self.releaser.offer(workflow)
        self.watch_metrics.handle_seconds.observe(time.perf_counter() - began)

    def _mirror(self, job: JobRecord, view: WorkflowView, deleting: bool, workflow: dict[str, Any]) -> None:
        status = view.ocean_status(job.stopreq)
        finished = status.finished
        code, text = status.status, status.text
        if deleting and not finished:
            finished = True
            code = code.failure
            text = f"{code.text}: the workflow was deleted on the cluster before it finished"
        failure = view.image_failure
        if failure is not None and not finished and self._gave_up_on(failure):
            finished = True
            code = code.failure
            text = f"{code.text}: the image {failure.image} of step {failure.task} cannot be pulled ({failure.reason})"
            self._terminate(view.name)
        details = {"steps": view.step_details, "argoPhase": view.phase}
        changes: list[StepChange] = []
        if any(job.details.get(key) != value for key, value in details.items()):
            committed = job.details.get("steps")
            before = committed if isinstance(committed, dict) else {}
            changes = step_changes(before, view.step_details, templates(workflow))
            self.store.update_details(job.job_id, details)
        stopreq = STOPREQ_DEADLINE if view.deadline_hit and not job.stopreq and finished else None
        changed = self.store.transition(
            job.job_id,
            code,
            source=SOURCE,
            text=text,
            finished=finished,
            results=view.results if finished else None,
            stopreq=stopreq,
            detail={"phase": view.phase},
        )
        self._observe(changes, workflow if changed and finished else None)

    def _gave_up_on(self, failure: ImageFailure) -> bool:
        if failure.final:
            return True
        since = cluster_time(failure.since)
        grace = self.settings.engine.argo.image_pull_grace
        return since is None or (datetime.now(UTC) - since).total_seconds() >= grace

    def _terminate(self, name: str) -> None:
        """Ends a Workflow whose job has just failed for good: its pods go (the final state is already written)."""
        try:
            self.client.patch_workflow(name, {"spec": {"shutdown": "Terminate"}})
        except KubeApiError as exc:
            self.metrics.error("terminate")
            log.warning("watcher: could not terminate workflow %s: %s", name, exc)

    def _observe(self, changes: list[StepChange], final: dict[str, Any] | None) -> None:
        """The changes just committed: the lag of each from the cluster's timestamp, the duration of each step
        that ended; ``final``: the Workflow whose final state was just committed."""
        now = datetime.now(UTC)
        for change in changes:
            self.watch_metrics.lag(change.change, (now - change.at).total_seconds())
            if change.change == STEP_FINISHED and change.outcome and change.seconds is not None:
                self.metrics.step_finished(change.template, change.outcome, change.seconds)
        finished_at = cluster_time((final.get("status") or {}).get("finishedAt")) if final is not None else None
        if finished_at is not None:
            self.watch_metrics.lag(WORKFLOW_FINISHED, (now - finished_at).total_seconds())

    def _settle_missing(self, seen: set[str], started: datetime) -> None:
        """Submitted, unfinished jobs whose Workflow is not on the cluster any more end as failed."""
        for job in self.store.unfinished("argo"):
            if job.workflow_name in seen or SUBMITTED not in job.details:
                continue
            if job.updated_at > started - MISSING_GRACE:
                continue  # submitted or changed while we listed: the watch will show it
            try:
                self.handle(self.client.get_workflow(str(job.workflow_name)))
                continue
            except KubeApiError as exc:
                if exc.code != 404:
                    raise
            self._fail(job, "the workflow disappeared from the cluster")

    def _fail(self, job: JobRecord, why: str) -> bool:
        """Ends the job as failed (before or after its algorithm ran) because of ``why``, with no results;
        False when it had ended already."""
        code = JobStatus(job.status).failure
        return self.store.transition(
            job.job_id, code, source=SOURCE, text=f"{code.text}: {why}", finished=True, results=[]
        )

    def _nodes_loader(self) -> NodesLoader | None:
        url = self.settings.engine.argo.server_url
        if not url:
            return None
        namespace = self.client.namespace

        def load(name: str) -> dict[str, dict[str, Any]]:
            response = httpx.get(f"{url.rstrip('/')}/api/v1/workflows/{namespace}/{name}", timeout=30)
            if response.status_code >= 400:
                raise KubeApiError(response.status_code, f"Argo Server GET workflow {name}: {response.text[:300]}")
            nodes: dict[str, dict[str, Any]] = (response.json().get("status") or {}).get("nodes") or {}
            return nodes

        return load
