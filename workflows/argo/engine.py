"""The ``argo`` engine: submits queued jobs' Workflows to a real Argo, sends stops and deletes, reads logs.

It runs as its own process (``c2d engine`` with ``C2D_ENGINE__KIND=argo``; the ``c2d-watcher``
Deployment) next to the :class:`~workflows.argo.watcher.Watcher`, which mirrors status back.
Everything it acts on comes from Postgres (:class:`~c2d.db.engine_queue.EngineQueue`), so a
provider only writes a job row and an engine restart resumes exactly where it stopped.

Submission is idempotent: the Workflow name is the job's (``c2d-<job id>``), so a resubmission
after a crash meets ``409 AlreadyExists`` and is recorded as submitted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from c2d.db.engine_queue import SHUTDOWN_SENT, SUBMITTED, WORKFLOW_DELETED, EngineQueue
from c2d.db.job_queue import JobQueue
from c2d.db.jobs import JobRecord, JobStore
from c2d.db.pool import Pool
from c2d.settings import Settings
from c2d.status import JobStatus
from workflows.argo.kube import KubeClient, KubeConfig
from workflows.argo.objects import WORKFLOW_LABEL, node_name, owner_reference, prepare
from workflows.argo.watcher import Watcher
from workflows.engine_base import BackgroundEngine
from workflows.exceptions import EngineError, KubeApiError
from workflows.metrics import ARGO_ERRORS, EngineMetrics

log = logging.getLogger(__name__)
ENGINE = "argo"
SOURCE = "argo-engine"


class ArgoEngine(BackgroundEngine):
    def __init__(self, settings: Settings, pool: Pool, client: KubeClient | None = None) -> None:
        super().__init__(EngineMetrics(ENGINE, ARGO_ERRORS))
        argo = settings.engine.argo
        self.settings = settings
        self.client = client or KubeClient(KubeConfig.load(argo.kubeconfig), settings.engine.namespace)
        self.store = JobStore(pool)
        self.queue = EngineQueue(pool, ENGINE)
        self.jobs = JobQueue(pool)
        self.watcher = Watcher(settings, pool, self.client, self.metrics)
        self.closing = threading.Event()
        self.threads: list[threading.Thread] = []
        self.failure: BaseException | None = None
        # submissions are latency-bound (three API calls each): a few run at once
        self.submitters = ThreadPoolExecutor(argo.submit_workers, thread_name_prefix="c2d-argo-submit")

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self, watch: bool = True) -> ArgoEngine:
        loops = [("c2d-argo-dispatch", self._dispatch_loop)]
        if watch:
            loops.append(("c2d-argo-watch", lambda: self.watcher.run(self.closing)))
            loops.append(("c2d-argo-release", lambda: self.watcher.run_release(self.closing)))
            loops.append(("c2d-argo-nodes", lambda: self.watcher.run_node_check(self.closing)))
        self.threads = [threading.Thread(target=self._guard, args=(f,), name=n, daemon=True) for n, f in loops]
        for thread in self.threads:
            thread.start()
        return self

    def _guard(self, loop: Callable[[], None]) -> None:
        """An unexpected error ends the whole engine (``failure``) instead of one thread silently."""
        try:
            loop()
        except BaseException as exc:
            log.exception("argo engine: %s died", threading.current_thread().name)
            self.failure = exc
            self.closing.set()
            self.wakeup.set()
            raise

    def close(self) -> None:
        self.closing.set()
        self.wakeup.set()
        self.client.interrupt_streams()  # ends a watch blocked on the stream
        for thread in self.threads:
            thread.join(timeout=30)
        self.submitters.shutdown(wait=True)
        self.client.close()  # last: a thread finishing its event may still need the API

    def stop(self, job_id: str) -> bool:
        """The request is in ``jobs.stopreq`` already: look at it now rather than at the next poll."""
        log.debug("job %s: stop requested", job_id)
        self.wakeup.set()
        return True

    # -- dispatching --------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        while not self.closing.is_set():
            try:
                self.dispatch_once()
            except (KubeApiError, psycopg.Error) as exc:
                self.metrics.error("dispatch")
                log.warning("argo dispatcher: %s; retrying", exc)
            self.wakeup.wait(self.settings.engine.argo.poll_seconds)
            self.wakeup.clear()

    def dispatch_once(self) -> int:
        """Claim the waiting jobs that fit (:mod:`c2d.db.capacity`; those past their queue wait expire) and submit
        them, send stop requests, delete removed jobs' Workflows."""
        batch = self.settings.engine.argo.submit_batch
        self.jobs.dispatch(ENGINE, self.settings.environments, batch, SOURCE)
        submitted = sum(self.submitters.map(self.submit, self.queue.to_submit(batch)))
        for job_id, name in self.queue.to_stop():
            self._shutdown(job_id, name)
        for job_id, name in self.queue.to_delete():
            self._delete(job_id, name)
        return submitted

    def submit(self, record: JobRecord) -> bool:
        """Create the job's fetch Secret and Workflow; a refusal by the cluster fails the job."""
        namespace = self.client.namespace
        try:
            submission = prepare(record.workflow or {}, namespace)
        except (EngineError, KeyError) as exc:
            self.metrics.error("submit_invalid")
            self._fail(record, f"the workflow cannot be submitted: {exc}")
            return False
        try:
            if submission.secret is not None:
                _create(self.client.create_secret, submission.secret)
            created = _create(self.client.create_workflow, submission.workflow)
            if created is None:
                created = self.client.get_workflow(str(submission.workflow["metadata"]["name"]))
            if submission.secret is not None:
                owners = {"metadata": {"ownerReferences": [owner_reference(created)]}}
                self.client.patch_secret(str(submission.secret["metadata"]["name"]), owners)
        except KubeApiError as exc:
            if exc.transient:
                self.metrics.error("submit_transient")
                log.warning("job %s: submission failed (%s); will retry", record.job_id, exc)
                return False
            self.metrics.error("submit_refused")
            self._fail(record, f"the cluster refused the workflow: {exc}")
            return False
        name = str(created["metadata"]["name"])
        argo = {"namespace": namespace, "workflow": name, "uid": created["metadata"].get("uid")}
        ui = self.settings.engine.argo.ui_url or self.settings.engine.argo.server_url
        if ui:
            argo["ui"] = f"{ui.rstrip('/')}/workflows/{namespace}/{name}"
        self.queue.mark(record.job_id, SUBMITTED, {"argo": argo})
        return True

    def _shutdown(self, job_id: str, name: str) -> None:
        try:
            self.client.patch_workflow(name, {"spec": {"shutdown": "Stop"}})
        except KubeApiError as exc:
            if exc.code != 404:
                raise
        self.queue.mark(job_id, SHUTDOWN_SENT)

    def _delete(self, job_id: str, name: str) -> None:
        try:
            self.client.delete_workflow(name)
        except KubeApiError as exc:
            if exc.code != 404:
                raise
        self.queue.mark(job_id, WORKFLOW_DELETED)

    def _fail(self, job: JobRecord, reason: str) -> None:
        code = JobStatus(job.status).failure
        log.error("job %s: %s", job.job_id, reason)
        self.store.transition(job.job_id, code, source=SOURCE, text=f"{code.text}: {reason}", finished=True, results=[])

    # -- operator access ------------------------------------------------------------------------
    def step_logs(self, job_id: str, step: str, container: str = "main") -> Iterator[str]:
        """A step's container log (the last attempt's pod), streamed line by line from the cluster."""
        job = self.store.get(job_id)
        if job is None or not job.workflow_name:
            raise EngineError(f"job {job_id} has no workflow")
        name = job.workflow_name
        pods = self.client.list_pods(f"{WORKFLOW_LABEL}={name}")
        wanted = f"{name}.{step}"
        candidates = [p for p in pods if node_name(p) == wanted or node_name(p).startswith(f"{wanted}(")]
        if not candidates:
            raise EngineError(f"job {job_id}: no pod for step {step!r} (not started, or already garbage-collected)")
        latest = max(candidates, key=lambda p: str(p["metadata"].get("creationTimestamp", "")))
        return self.client.pod_log_lines(str(latest["metadata"]["name"]), container)


def _create(create: Any, body: dict[str, Any]) -> dict[str, Any] | None:
    """Create an object; None when it exists already (a resubmission after a crash)."""
    try:
        result: dict[str, Any] = create(body)
        return result
    except KubeApiError as exc:
        if exc.code == 409:
            return None
        raise
