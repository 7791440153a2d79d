"""The embedded engine: runs queued jobs' Workflow objects on this machine and mirrors them to Postgres.

Jobs reach it through Postgres only: a job row with ``engine='local'``, status 1 and the rendered
Workflow is claimed (status 10) when a worker is free and its environment has room for it
(:mod:`c2d.db.capacity`), interpreted and run in a worker thread; every step change becomes an Ocean
status through :mod:`workflows.status_map` and a ``job_events`` row. Stop requests are read
from ``jobs.stopreq`` (and delivered at once by :meth:`LocalEngine.stop` in the same process).

One engine per database: it holds a Postgres advisory lock while it runs, so at start every job it
finds half-run was orphaned by a dead engine and is recovered (see :mod:`workflows.local.recovery`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from c2d.db import gpu_grants
from c2d.db.job_queue import JobQueue
from c2d.db.job_records import ResultEntry, StepDetail
from c2d.db.jobs import JobRecord, JobStore
from c2d.db.pool import Pool
from c2d.exceptions import GpuBusyError
from c2d.settings import Settings
from c2d.status import STOPREQ_API, STOPREQ_DEADLINE, JobStatus
from workflows.engine_base import BackgroundEngine
from workflows.exceptions import (
    EngineError,
    GpuUnavailableError,
    JobSetupError,
    SandboxError,
    UnsupportedWorkflowError,
)
from workflows.livelogs import LogStream
from workflows.local import jobdisk
from workflows.local.cgroups import layout_name, prepare_jobs_group, remove_stale_groups
from workflows.local.folders import spread_subfolders
from workflows.local.gpu import check_devices
from workflows.local.identity import Identity
from workflows.local.interpret import Plan, interpret
from workflows.local.job import REPO_ROOT, JobRun, discard_job_folder
from workflows.local.protections import Protections, detect
from workflows.local.recovery import prepare_resume
from workflows.local.sandbox import compile_steps, steps_runtime
from workflows.local.staging import Staging
from workflows.local.warm import WarmRunner, WarmRunners
from workflows.metrics import LOCAL_ERRORS, EngineMetrics
from workflows.status_map import DONE_PHASES, StepState, ocean_status

log = logging.getLogger(__name__)
ENGINE = "local"
SOURCE = "local-engine"
LOCK_KEY = 0x6332_6C6F  # "c2lo": one local engine per database
POLL_SECONDS = 0.2
DB_RETRY_MAX = 5.0  # seconds between attempts while the database is away
SANDBOX_UID = "sandboxUid"  # job details: the host uid its sandboxes ran as
GPUS = "gpus"  # job details: the host GPU indexes it was granted
T = TypeVar("T")


class LocalEngine(BackgroundEngine):
    def __init__(self, settings: Settings, pool: Pool, dsn: str) -> None:
        super().__init__(EngineMetrics(ENGINE, LOCAL_ERRORS))
        self.settings = settings
        self.pool = pool
        self.store = JobStore(pool)
        self.queue = JobQueue(pool)
        self.dsn = dsn
        self.running: dict[str, JobRun] = {}
        self.pending_statuses: dict[str, list[tuple[int, str]]] = {}  # job id -> statuses its next mirror writes
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.executor = ThreadPoolExecutor(settings.engine.max_parallel_jobs, thread_name_prefix="c2d-job")
        self.dispatcher: threading.Thread | None = None
        self.lock_conn: psycopg.Connection[Any] | None = None
        self.secrets = storage_secrets(settings)
        self.warm: WarmRunners | None = None
        self.protections: Protections | None = None
        self.shared_jobs_dir = False  # this engine made the jobs folder a shared mount (undone at close)
        self.staging: Staging | None = None  # where the jobs' uids find the folders their sandboxes bind

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> LocalEngine:
        conn = psycopg.connect(self.dsn, autocommit=True)
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        if not row or not row[0]:
            conn.close()
            raise EngineError("another local engine is already running on this database; stop it first")
        self.lock_conn = conn
        cgroup_root = self.settings.engine.cgroup_root
        if missing := prepare_jobs_group(cgroup_root):
            log.warning(
                "cgroup %s: job steps cannot be limited by the %s controller(s) here (each job's details name "
                "what is not enforced: limitsNotEnforced)",
                layout_name(cgroup_root),
                ", ".join(missing),
            )
        else:
            log.info("job steps' memory, pids and CPU are limited through cgroup %s", layout_name(cgroup_root))
        if stale := remove_stale_groups(cgroup_root):
            log.info("removed %d step cgroup(s) left by engines that were killed", stale)
        self._check_gpus()
        if not compile_steps(REPO_ROOT):
            log.warning("the step programs' bytecode could not be written; each step compiles them at start")
        for folder in (self.settings.jobs_dir, self.settings.store_dir):
            folder.mkdir(parents=True, exist_ok=True)
            # the jobs' uids pass through to their own folders inside, and list nothing
            folder.chmod(0o711)
            if not spread_subfolders(folder):
                log.debug("%s: its subfolders cannot be spread over block groups (not ext2/3/4)", folder)
        try:
            self.protections = detect(self.settings.engine, self.settings.jobs_dir)
            # disks a killed engine left mounted: gone before anything is bound over them (the jobs they
            # belong to, if any is resumed, mount theirs again)
            jobdisk.unmount_under(self.settings.jobs_dir)
            if self.protections.job_disks:
                self.shared_jobs_dir = jobdisk.share(self.settings.jobs_dir)
            if self.protections.pool is not None:
                self.staging = Staging.for_data_dir(self.settings.data_dir)
                self.staging.stage(self._sandbox_folders())
        except (EngineError, SandboxError) as exc:
            self._undo_mounts()
            self._release_lock()
            raise EngineError(f"the local engine cannot start: {exc}") from None
        if self.settings.engine.warm_steps:
            protections = self.protections
            warm = WarmRunners(
                lambda identity: WarmRunner(
                    self.settings.engine,
                    REPO_ROOT,
                    (self.settings.jobs_dir, self.settings.store_dir),
                    (self.settings.data_dir,),
                    identity=identity,
                    seccomp=protections.seccomp is not None,
                    keyctl=protections.keyctl,
                    reach=self._reach,
                ),
                self.settings.log_dir,
            )
            if warm.usable():
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
        self._undo_mounts()
        self._release_lock()

    def _undo_mounts(self) -> None:
        if self.staging is not None:
            self.staging.close()
            self.staging = None
        if self.shared_jobs_dir:
            jobdisk.unshare(self.settings.jobs_dir)
            self.shared_jobs_dir = False

    def _sandbox_folders(self) -> list[tuple[Path, bool]]:
        """The host folders the sandboxes bind from (and whether read-only): the jobs folder, the results store,
        the step programs' runtime and every configured runtime."""
        engine = self.settings.engine
        runtimes = [*steps_runtime(REPO_ROOT).paths, *(path for r in engine.runtimes for path in r.paths)]
        folders = [(self.settings.jobs_dir, False), (self.settings.store_dir, False)]
        return folders + [(path, True) for path in dict.fromkeys(runtimes) if path.is_dir()]

    def _reach(self, path: Path) -> Path:
        return self.staging.reach(path) if self.staging is not None else path

    def _release_lock(self) -> None:
        if self.lock_conn is not None:
            self.lock_conn.close()
            self.lock_conn = None

    def stop(self, job_id: str) -> bool:
        """Deliver a stop request (already stored in ``jobs.stopreq``) to a running job at once."""
        with self.lock:
            run = self.running.get(job_id)
        if run is None:
            return False
        run.stop.set()
        return True

    def algorithm_log(self, job: JobRecord) -> LogStream | None:
        """The live output of ``job``'s algorithm while this engine runs it (:class:`~workflows.livelogs.LiveLogs`)."""
        with self.lock:
            run = self.running.get(job.job_id)
        return run.algorithm_log() if run is not None else None

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
                # waiting jobs past their queue wait end even while every worker is busy
                claimed = self.queue.dispatch(ENGINE, self.settings.environments, free, SOURCE)
            except psycopg.OperationalError as exc:  # the database is away: running jobs wait for it
                self.metrics.error("database")
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
                self.metrics.error("database")
                log.warning("local engine: database unavailable (%s); retrying in %.1f s", exc, delay)
                self.closing.wait(delay)
                delay = min(delay * 2, DB_RETRY_MAX)

    def _launch(self, record: JobRecord, *, resume: bool) -> None:
        try:
            plan = interpret(record.workflow or {}, self.secrets)
        except UnsupportedWorkflowError as exc:
            self.metrics.error("unsupported_workflow")
            self._finish_error(record.job_id, f"the local engine cannot run this workflow: {exc}")
            return
        try:
            devices = self._gpu_devices(record.environment, plan)
        except GpuUnavailableError as exc:
            self._finish_error(record.job_id, str(exc))
            return
        assert self.protections is not None  # set by start()
        pool = self.protections.pool
        recorded = record.details.get(SANDBOX_UID) if resume else None
        identity = pool.acquire(recorded if isinstance(recorded, int) else None) if pool else None
        run = JobRun(
            job_id=record.job_id,
            plan=plan,
            job_dir=self.settings.jobs_dir / record.job_id,
            engine=self.settings.engine,
            store_dir=self.settings.store_dir,
            hidden=(self.settings.data_dir,),
            on_change=lambda states, write: self._mirror(record.job_id, plan, states, write),
            warm=self.warm.runner(identity) if self.warm is not None else None,
            protections=self.protections,
            identity=identity,
            reach=self._reach,
            on_step_end=self.metrics.step_finished,
        )
        if resume:
            message = prepare_resume(run, record)
            if message is not None:
                self._release(run)
                self._finish_error(record.job_id, message)
                return
        if record.stopreq:
            run.stop.set()
        with self.lock:
            self.running[record.job_id] = run
        self.executor.submit(self._execute, run, devices)

    def _release(self, run: JobRun) -> None:
        if run.identity is not None and self.protections is not None and self.protections.pool is not None:
            self.protections.pool.release(run.identity)
        self._release_gpus(run)

    def _release_gpus(self, run: JobRun) -> None:
        """Give back the job's GPUs, once (before its final status is written: its room in the queue is free
        then; ``_release`` calls it again for the paths that ended otherwise)."""
        if _gpu_count(run.plan) and not run.gpus_released:
            try:
                self._db(lambda: self._grants(gpu_grants.release, run.job_id))
                run.gpus_released = True
            except psycopg.OperationalError:  # the engine closes: its next start drops the grant
                log.warning("job %s: its GPU grant is left to the next engine start", run.job_id)

    # -- GPUs ---------------------------------------------------------------------------------
    def _grants(self, action: Callable[..., T], *args: Any) -> T:
        """``action(conn, *args)`` of :mod:`c2d.db.gpu_grants` on a connection of the pool."""
        with self.pool.connection() as conn:
            return action(conn, *args)

    def _check_gpus(self) -> None:
        """Say at start which environment declares GPUs this machine lacks (its GPU jobs will end with the error
        then): the operator learns it before a consumer pays for one."""
        for env in self.settings.environments:
            if env.gpu is not None:
                try:
                    check_devices(self.settings.engine.gpu_dev_dir, env.gpu.devices)
                except GpuUnavailableError as exc:
                    log.warning("environment %s: %s; its GPU jobs will fail to start", env.id, exc)

    def _gpu_devices(self, environment: str, plan: Plan) -> list[int]:
        """The host devices a job of ``environment`` may be granted (empty: its plan asks for no GPU).
        GpuUnavailableError when it asks for GPUs that the node's environment does not declare."""
        if not _gpu_count(plan):
            return []
        env = next((e for e in self.settings.environments if e.id == environment), None)
        if env is None or env.gpu is None:
            raise GpuUnavailableError(f"the environment {environment!r} of this node has no GPU")
        return list(env.gpu.devices)

    def _grant_gpus(self, run: JobRun, devices: list[int]) -> bool:
        """Grant the job its GPUs (``run.gpus``) unless its GPU steps all ran (a resumed job). While another
        job holds them (an environment that shares devices), wait. False when the job must not go on: it was
        ended with the reason (a GPU gone, no driver, stopped while it waited), or the engine closes."""
        count = _gpu_count(run.plan)
        if all(run.states.get(s.task, {}).get("phase") in DONE_PHASES for s in run.plan.steps if s.gpus):
            return True
        waiting = False
        while True:
            try:
                run.gpus = tuple(self._db(lambda: self._grants(gpu_grants.grant, run.job_id, devices, count)))
                break
            except GpuBusyError as exc:
                if self.closing.is_set():
                    return False  # left for recovery, like any job running at close
                if run.stop.is_set():
                    self._release_gpus(run)
                    self._finish_error(run.job_id, "stopped while it waited for a free GPU")
                    return False
                if not waiting:
                    log.info("job %s waits for a GPU: %s", run.job_id, exc)
                    waiting = True
                self.closing.wait(POLL_SECONDS)
        try:
            check_devices(self.settings.engine.gpu_dev_dir, run.gpus)
        except GpuUnavailableError as exc:
            self.metrics.error("job_setup")
            log.error("job %s: %s", run.job_id, exc)
            self._release_gpus(run)
            self._finish_error(run.job_id, str(exc))
            return False
        return True

    def _execute(self, run: JobRun, devices: list[int]) -> None:
        try:
            if devices and not self._grant_gpus(run, devices):
                return
            try:
                results = run.run()
            except JobSetupError as exc:
                self.metrics.error("job_setup")
                log.error("job %s: %s", run.job_id, exc)
                self._release_gpus(run)
                self._finish_error(run.job_id, f"could not set up the job: {exc}")
                return
            if run.abandoned:
                log.warning("job %s: left for recovery (engine shutting down)", run.job_id)
                return
            self._release_gpus(run)
            self._finish(run, results)
            # Then the folder (a crash in between leaves it to the next start's sweep, see _recover)
            if self.settings.engine.keep_job_dirs:
                run.unmount()
            else:
                run.cleanup()
        except Exception:  # a job thread must never leave its job running forever
            self.metrics.error("internal")
            log.exception("job %s: engine error", run.job_id)
            self._finish_error(run.job_id, "internal engine error (see the engine log)")
        finally:
            self._release(run)
            with self.lock:
                self.running.pop(run.job_id, None)
                self.pending_statuses.pop(run.job_id, None)
            self.wakeup.set()

    # -- mirroring ----------------------------------------------------------------------------
    def _stopreq(self, run: JobRun) -> int:
        if run.stopreq:
            return run.stopreq
        return STOPREQ_API if run.stop.is_set() else 0

    def _mirror(self, job_id: str, plan: Plan, states: dict[str, StepDetail], write: bool) -> None:
        """Called by the job's own thread only. Statuses not written yet are kept in order and written with
        the next write (one statement; an event for each change)."""
        with self.lock:
            run = self.running.get(job_id)
            pending_statuses = self.pending_statuses.setdefault(job_id, [])
        stopreq = self._stopreq(run) if run else 0
        steps = [_state(step.task, step.stage, states) for step in plan.steps]
        status = ocean_status(steps, workflow_done=False, stopreq=stopreq)
        pending_statuses.append((int(status.status), status.text))
        if write:
            detail = {"steps": states} | _sandbox_detail(run.identity if run else None)
            detail |= {GPUS: list(run.gpus)} if run and run.gpus else {}
            self._db(lambda: self.store.advance(job_id, pending_statuses, detail, SOURCE))
            pending_statuses.clear()

    def _finish(self, run: JobRun, results: list[ResultEntry] | None) -> None:
        stopreq = self._stopreq(run)
        if stopreq == STOPREQ_DEADLINE:
            self._db(lambda: self.store.request_stop(run.job_id, STOPREQ_DEADLINE))
        steps = [_state(step.task, step.stage, run.states) for step in run.plan.steps]
        status = ocean_status(steps, workflow_done=True, stopreq=stopreq)
        detail: dict[str, Any] = {"steps": run.states} | _sandbox_detail(run.identity)
        detail |= {GPUS: list(run.gpus)} if run.gpus else {}
        if run.limits_missing:
            detail["limitsNotEnforced"] = run.limits_missing
        if self.protections is not None and self.protections.missing:
            detail["protectionsMissing"] = list(self.protections.missing)
        with self.lock:
            went_through = self.pending_statuses.pop(run.job_id, [])  # held back by the last step's end
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
                went_through=went_through,
            )
        )

    def _finish_error(self, job_id: str, reason: str) -> None:
        job = self._db(lambda: self.store.get(job_id))
        code = JobStatus(job.status if job is not None else JobStatus.JOB_STARTED).failure
        text = f"{code.text}: {reason}"
        self._db(lambda: self.store.transition(job_id, code, source=SOURCE, text=text, finished=True, results=[]))
        discard_job_folder(self.settings.jobs_dir / job_id)

    # -- recovery -----------------------------------------------------------------------------
    def _recover(self) -> None:
        unfinished = self.store.unfinished(ENGINE)
        # GPUs held by jobs that no longer run (the jobs resumed below are granted theirs again)
        resumed = [record.job_id for record in unfinished if record.status != JobStatus.WARMING_UP]
        for device, job_id in self._grants(gpu_grants.release_all_but, resumed).items():
            log.warning("GPU %d given back: its job %s is not running", device, job_id)
        # A job's folder outlives it only when an engine died between its final status and the folder's
        # removal (or while a job failed to start): none of a finished job's data stays on disk.
        if not self.settings.engine.keep_job_dirs:
            keep = {record.job_id for record in unfinished}
            for folder in self.settings.jobs_dir.iterdir():
                if folder.name not in keep:
                    log.warning("removing the folder of job %s: the job is not running", folder.name)
                    discard_job_folder(folder)  # errors logged: a job's folder never stops the engine
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


def _sandbox_detail(identity: Identity | None) -> dict[str, Any]:
    """The host uid of the job's sandboxes, in its details: a job resumed after a restart gets it back."""
    return {SANDBOX_UID: identity.uid} if identity else {}


def _gpu_count(plan: Plan) -> int:
    """The GPUs a job holds from start to end: as many as its most demanding step asks for."""
    return max((step.gpus for step in plan.steps), default=0)


def _state(task: str, stage: str, states: dict[str, StepDetail]) -> StepState:
    state = states.get(task, {})
    return StepState(task, stage, state.get("phase"), state.get("exitCode"), state.get("message"))
