"""The embedded engine: runs queued jobs' Workflow objects on this machine and mirrors them to Postgres.

Jobs reach it through Postgres only: a job row with ``engine='local'``, status 1 and the rendered
Workflow is claimed (status 10), interpreted and run in a worker thread; every step change becomes
an Ocean status through :mod:`workflows.status_map` and a ``job_events`` row. Stop requests are read
from ``jobs.stopreq`` (and delivered at once by :meth:`LocalEngine.stop` in the same process).

One engine per database: it holds a Postgres advisory lock while it runs, so at start every job it
finds half-run was orphaned by a dead engine and is recovered (see :mod:`workflows.local.recovery`).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import psycopg

from c2d.db.jobs import JobRecord, JobStore
from c2d.db.pool import Pool
from c2d.settings import Settings
from c2d.status import STOPREQ_API, STOPREQ_DEADLINE, JobStatus
from workflows.engine_base import BackgroundEngine
from workflows.exceptions import EngineError, UnsupportedWorkflowError
from workflows.local.cgroups import prepare_jobs_group, remove_stale_groups
from workflows.local.folders import spread_subfolders
from workflows.local.interpret import Plan, interpret
from workflows.local.job import REPO_ROOT, JobRun
from workflows.local.recovery import prepare_resume
from workflows.local.sandbox import compile_steps
from workflows.local.warm import WarmRunner
from workflows.status_map import StepState, ocean_status

log = logging.getLogger(__name__)
ENGINE = "local"
SOURCE = "local-engine"
LOCK_KEY = 0x6332_6C6F  # "c2lo": one local engine per database
POLL_SECONDS = 0.2
DB_RETRY_MAX = 5.0  # seconds between attempts while the database is away
T = TypeVar("T")


class LocalEngine(BackgroundEngine):
    def __init__(self, settings: Settings, pool: Pool, dsn: str) -> None:
        super().__init__()
        self.settings = settings
        self.store = JobStore(pool)
        self.dsn = dsn
        self.running: dict[str, JobRun] = {}
        self.unwritten: dict[str, list[tuple[int, str]]] = {}  # job id -> statuses its next mirror writes
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.executor = ThreadPoolExecutor(settings.engine.max_parallel_jobs, thread_name_prefix="c2d-job")
        self.dispatcher: threading.Thread | None = None
        self.lock_conn: psycopg.Connection[Any] | None = None
        self.secrets = storage_secrets(settings)
        self.warm: WarmRunner | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> LocalEngine:
        conn = psycopg.connect(self.dsn, autocommit=True)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if not row or not row[0]:
            conn.close()
            raise EngineError("another local engine is already running on this database; stop it first")
        self.lock_conn = conn
        if not prepare_jobs_group(self.settings.engine.cgroup_root):
            log.warning("job steps could not get a lower CPU weight than the node (no cgroup v1 cpu controller)")
        if stale := remove_stale_groups(self.settings.engine.cgroup_root):
            log.info("removed %d step cgroup(s) left by engines that were killed", stale)
        if not compile_steps(REPO_ROOT):
            log.warning("the step programs' bytecode could not be written; each step compiles them at start")
        self.settings.jobs_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.settings.store_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.settings.jobs_dir, self.settings.store_dir):
            if not spread_subfolders(folder):
                log.debug("%s: its subfolders cannot be spread over block groups (not ext2/3/4)", folder)
        if self.settings.engine.warm_steps:
            warm = WarmRunner(
                self.settings.engine,
                REPO_ROOT,
                (self.settings.jobs_dir, self.settings.store_dir),
                (self.settings.data_dir,),
            )
            if warm.start(self.settings.log_dir / "stepserver.log"):
                self.warm = warm
        self._recover()
        self.dispatcher = threading.Thread(target=self._dispatch_loop, name="c2d-dispatcher", daemon=True)
        self.dispatcher.start()
        return self

    def close(self) -> None:
        """Stop dispatching and kill running steps; their jobs are recovered by the next start."""
        self.closing.set()
        self.wakeup.set()
        with self.lock:
            runs = list(self.running.values())
        for run in runs:
            run.abandoned = True
            run.stop.set()
        if self.dispatcher is not None:
            self.dispatcher.join()
        self.executor.shutdown(wait=True)
        if self.warm is not None:
            self.warm.close()
        if self.lock_conn is not None:
            self.lock_conn.close()

    def stop(self, job_id: str) -> bool:
        """Deliver a stop request (already stored in ``jobs.stopreq``) to a running job at once."""
        with self.lock:
            run = self.running.get(job_id)
        if run is None:
            return False
        run.stop.set()
        return True

    # -- dispatching --------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        next_stop_poll = 0.0
        while not self.closing.is_set():
            with self.lock:
                running = list(self.running)
                free = self.settings.engine.max_parallel_jobs - len(running)
            try:
                # stop requests stored by another process: read every POLL_SECONDS, not at every wake-up
                # (the provider in this process delivers its own at once through stop())
                if time.monotonic() >= next_stop_poll:
                    next_stop_poll = time.monotonic() + POLL_SECONDS
                    for job_id in self.store.stop_requests(running):
                        self.stop(job_id)
                claimed = self.store.claim_queued(ENGINE, free, SOURCE) if free > 0 else []
            except psycopg.OperationalError as exc:  # the database is away: running jobs wait for it
                log.warning("local engine: database unavailable (%s); retrying", exc)
                claimed = []
                self.closing.wait(DB_RETRY_MAX)
            for record in claimed:
                self._launch(record, resume=False)
            self.wakeup.wait(POLL_SECONDS)
            self.wakeup.clear()

    def _db(self, action: Callable[[], T]) -> T:
        """``action()`` against the database, waiting for it while it is away (a job's state is never
        dropped because Postgres restarted); gives up only when the engine shuts down."""
        delay = 0.2
        while True:
            try:
                return action()
            except psycopg.OperationalError as exc:
                if self.closing.is_set():
                    raise
                log.warning("local engine: database unavailable (%s); retrying in %.1f s", exc, delay)
                self.closing.wait(delay)
                delay = min(delay * 2, DB_RETRY_MAX)

    def _launch(self, record: JobRecord, *, resume: bool) -> None:
        try:
            plan = interpret(record.workflow or {}, self.secrets)
        except UnsupportedWorkflowError as exc:
            self._finish_error(record.job_id, f"the local engine cannot run this workflow: {exc}")
            return
        run = JobRun(
            job_id=record.job_id,
            plan=plan,
            job_dir=self.settings.jobs_dir / record.job_id,
            engine=self.settings.engine,
            store_dir=self.settings.store_dir,
            hidden=(self.settings.data_dir,),
            on_change=lambda states, write: self._mirror(record.job_id, plan, states, write),
            warm=self.warm,
        )
        if resume:
            message = prepare_resume(run, record)
            if message is not None:
                self._finish_error(record.job_id, message)
                return
        if record.stopreq:
            run.stop.set()
        with self.lock:
            self.running[record.job_id] = run
        self.executor.submit(self._execute, run)

    def _execute(self, run: JobRun) -> None:
        try:
            results = run.run()
            if run.abandoned:
                log.warning("job %s: left for recovery (engine shutting down)", run.job_id)
                return
            self._finish(run, results)
            # Then the folder (a crash in between leaves it to the next start's sweep, see _recover)
            if not self.settings.engine.keep_job_dirs:
                run.cleanup()
        except Exception:  # a job thread must never leave its job running forever
            log.exception("job %s: engine error", run.job_id)
            self._finish_error(run.job_id, "internal engine error (see the engine log)")
        finally:
            with self.lock:
                self.running.pop(run.job_id, None)
                self.unwritten.pop(run.job_id, None)
            self.wakeup.set()

    # -- mirroring ----------------------------------------------------------------------------
    def _stopreq(self, run: JobRun) -> int:
        if run.stopreq:
            return run.stopreq
        return STOPREQ_API if run.stop.is_set() else 0

    def _mirror(self, job_id: str, plan: Plan, states: dict[str, dict[str, Any]], write: bool) -> None:
        """Called by the job's own thread only. Statuses not written yet are kept in order and written with
        the next write (one statement; an event for each change)."""
        with self.lock:
            run = self.running.get(job_id)
            unwritten = self.unwritten.setdefault(job_id, [])
        stopreq = self._stopreq(run) if run else 0
        steps = [_state(step.task, step.stage, states) for step in plan.steps]
        status = ocean_status(steps, workflow_done=False, stopreq=stopreq)
        unwritten.append((int(status.status), status.text))
        if write:
            self._db(lambda: self.store.mirror(job_id, unwritten, {"steps": states}, SOURCE))
            unwritten.clear()

    def _finish(self, run: JobRun, results: list[dict[str, Any]] | None) -> None:
        stopreq = self._stopreq(run)
        if stopreq == STOPREQ_DEADLINE:
            self._db(lambda: self.store.request_stop(run.job_id, STOPREQ_DEADLINE))
        steps = [_state(step.task, step.stage, run.states) for step in run.plan.steps]
        status = ocean_status(steps, workflow_done=True, stopreq=stopreq)
        detail: dict[str, Any] = {"steps": run.states}
        if run.limits_missing:
            detail["limitsNotEnforced"] = run.limits_missing
        with self.lock:
            via = self.unwritten.pop(run.job_id, [])  # held back by the last step's end
        self._db(
            lambda: self.store.transition(
                run.job_id,
                status.status,
                source=SOURCE,
                text=status.text,
                finished=True,
                results=results if results is not None else [],
                stopreq=stopreq or None,
                detail=detail,
                via=via,
            )
        )

    def _finish_error(self, job_id: str, reason: str) -> None:
        job = self._db(lambda: self.store.get(job_id))
        code = JobStatus.DATA_PROVISIONING_FAILED
        if job is not None and job.status >= JobStatus.RUNNING_ALGORITHM:
            code = JobStatus.ALGORITHM_FAILED
        text = f"{code.text}: {reason}"
        self._db(lambda: self.store.transition(job_id, code, source=SOURCE, text=text, finished=True, results=[]))
        shutil.rmtree(self.settings.jobs_dir / job_id, ignore_errors=True)

    # -- recovery -----------------------------------------------------------------------------
    def _recover(self) -> None:
        unfinished = self.store.unfinished(ENGINE)
        # A job's folder outlives it only when an engine died between its final status and the folder's
        # removal (or while a job failed to start): none of a finished job's data stays on disk.
        if not self.settings.engine.keep_job_dirs:
            keep = {record.job_id for record in unfinished}
            for folder in self.settings.jobs_dir.iterdir():
                if folder.name not in keep:
                    log.warning("removing the folder of job %s: the job is not running", folder.name)
                    shutil.rmtree(folder, ignore_errors=True)
        for record in unfinished:
            if record.status == JobStatus.WARMING_UP:
                continue  # still queued: the dispatcher claims it
            log.warning("job %s: found unfinished after an engine restart (status %s)", record.job_id, record.status)
            self._launch(record, resume=True)


def storage_secrets(settings: Settings) -> dict[str, dict[str, str]]:
    """What the Kubernetes Secret of the steps holds on a cluster, from the node's own settings."""
    s3 = settings.storage.s3
    if not (s3.configured and s3.access_key and s3.secret_key):
        return {}
    keys = {"s3-access-key": s3.access_key.get_secret_value(), "s3-secret-key": s3.secret_key.get_secret_value()}
    return {settings.storage.secret_name: keys}


def _state(task: str, stage: str, states: dict[str, dict[str, Any]]) -> StepState:
    state = states.get(task, {})
    return StepState(task, stage, state.get("phase"), state.get("exitCode"), state.get("message"))
