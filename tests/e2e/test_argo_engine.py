"""The argo engine and watcher against the real Argo controller (pods simulated by kwok)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from secrets import token_hex

import pytest

from c2d.db.pool import Pool
from c2d.settings import Settings
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from c2d.status import STOPREQ_API, STOPREQ_DEADLINE, JobStatus
from tests.workflows.jobs import job_spec, make_environment
from workflows import labels
from workflows.argo.engine import ArgoEngine
from workflows.argo.kube import KubeClient
from workflows.argo.objects import FINALIZER, secret_name
from workflows.argo.watcher import SELECTOR, Watcher
from workflows.exceptions import EngineError, KubeApiError, KubeGoneError
from workflows.spec import JobSpec

from .conftest import DURATION, EXIT_CODE, NAMESPACE, RESULTS, ArgoJobs, Cluster, EngineProcess

pytestmark = pytest.mark.e2e
ENV = make_environment()


def _spec() -> JobSpec:
    return job_spec("print('hi')", ["https://example.com/data.csv"])


def test_a_job_runs_as_an_argo_workflow_and_every_phase_is_mirrored(
    argo_engine: ArgoEngine, argo_jobs: ArgoJobs, cluster: Cluster
) -> None:
    spec = _spec()
    results = [{"filename": "out.txt", "filesize": 3, "type": "output", "index": 0}]
    job_id = argo_jobs.submit(spec, ENV, inject={"output-publish": {RESULTS: json.dumps(results)}})
    job = argo_jobs.wait(job_id)
    assert job.status == JobStatus.JOB_FINISHED, job.status_text
    assert job.results == results  # output-publish's `results` output parameter
    statuses = argo_jobs.statuses(job_id)
    # claimed, fetch running, algorithm running, publishing, finished: in this order
    for earlier, later in zip([10, 20, 40, 60, 70], [20, 40, 60, 70], strict=False):
        assert statuses.index(earlier) < statuses.index(later), statuses
    argo = job.details["argo"]
    assert argo["ui"] == f"{cluster.argo_server}/workflows/c2d/c2d-{job_id}"
    steps = job.details["steps"]
    assert [steps[s]["phase"] for s in ("input-fetch", "algorithm", "output-publish")] == ["Succeeded"] * 3
    assert steps["input-fetch"]["finishedAt"] <= steps["algorithm"]["startedAt"]
    assert steps["algorithm"]["finishedAt"] <= steps["output-publish"]["startedAt"]

    # the Workflow (kept an hour by its TTL) is labelled and, its final state mirrored, released
    workflow = argo_jobs.wait_workflow(job_id, lambda w: FINALIZER not in w["metadata"].get("finalizers", []))
    meta = workflow["metadata"]
    assert meta["labels"][labels.JOB_ID] == job_id
    assert meta["labels"][labels.OWNER] == spec.owner.lower()
    assert meta["annotations"][labels.INPUT_DIDS] == spec.input_dids[0]
    with pytest.raises(KubeApiError) as gone:  # the decrypted fetch spec does not outlive the job
        argo_jobs.kube.get_secret(secret_name(f"c2d-{job_id}"))
    assert gone.value.code == 404


def test_step_logs_are_read_from_the_running_pod(
    argo_engine: ArgoEngine, argo_jobs: ArgoJobs, cluster: Cluster
) -> None:
    job_id = argo_jobs.submit(_spec(), ENV, inject={"algorithm": {DURATION: "6000"}})
    argo_jobs.wait(job_id, lambda job: job.status == JobStatus.RUNNING_ALGORITHM)
    lines = list(argo_engine.step_logs(job_id, "algorithm"))
    assert lines and cluster.pod_log_line in lines[-1]  # kwok serves every main container this line
    with pytest.raises(EngineError, match="no pod for step 'result-filter'"):
        argo_engine.step_logs(job_id, "result-filter")
    assert argo_jobs.wait(job_id).status == JobStatus.JOB_FINISHED


@pytest.mark.parametrize(
    ("step", "code", "status", "text"),
    [
        ("algorithm", "3", JobStatus.ALGORITHM_FAILED, "exit code 3"),
        ("input-fetch", "32", JobStatus.ALGORITHM_PROVISIONING_FAILED, "exit code 32"),
        ("input-fetch", "31", JobStatus.DATA_PROVISIONING_FAILED, "exit code 31"),
        ("output-publish", "62", JobStatus.RESULTS_UPLOAD_FAILED, "exit code 62"),
    ],
)
def test_an_injected_step_failure_becomes_its_ocean_code(
    argo_engine: ArgoEngine, argo_jobs: ArgoJobs, step: str, code: str, status: JobStatus, text: str
) -> None:
    job_id = argo_jobs.submit(_spec(), ENV, inject={step: {EXIT_CODE: code}})
    job = argo_jobs.wait(job_id)
    assert job.status == status, job.status_text
    assert text in job.status_text
    assert job.details["steps"][step]["exitCode"] == int(code)
    if step != "output-publish":  # logs are still published after a failed step (DAG depends)
        assert job.details["steps"]["output-publish"]["phase"] == "Succeeded"


def test_stop_terminates_the_workflow(argo_engine: ArgoEngine, argo_jobs: ArgoJobs) -> None:
    job_id = argo_jobs.submit(_spec(), ENV, inject={"algorithm": {DURATION: "120000"}})
    argo_jobs.wait(job_id, lambda job: job.status == JobStatus.RUNNING_ALGORITHM)
    assert argo_jobs.store.request_stop(job_id, STOPREQ_API)
    argo_engine.stop(job_id)
    job = argo_jobs.wait(job_id, timeout=30)
    assert (job.status, job.stopreq) == (JobStatus.JOB_FINISHED, STOPREQ_API), job.status_text
    workflow = argo_jobs.wait_workflow(job_id, lambda w: w.get("status", {}).get("phase") == "Failed")
    assert workflow["spec"]["shutdown"] == "Stop"
    assert "Stopped with strategy 'Stop'" in workflow["status"]["message"]


def test_the_algorithm_deadline_is_reported_as_stopreq_2(argo_jobs: ArgoJobs, argo_engine: ArgoEngine) -> None:
    env = make_environment(max_job_duration=2)
    job_id = argo_jobs.submit(_spec(), env, inject={"algorithm": {DURATION: "60000"}})
    job = argo_jobs.wait(job_id, timeout=60)
    assert (job.status, job.stopreq) == (JobStatus.JOB_FINISHED, STOPREQ_DEADLINE), job.status_text
    assert "deadline" in job.details["steps"]["algorithm"]["message"]


def test_a_workflow_the_apiserver_refuses_fails_the_job_with_its_reason(
    argo_jobs: ArgoJobs, argo_engine: ArgoEngine
) -> None:
    job_id = argo_jobs.submit(_spec(), ENV, workflow_labels={"c2d.test/bad": "not a valid label value!"})
    job = argo_jobs.wait(job_id, timeout=30)
    assert job.status == JobStatus.DATA_PROVISIONING_FAILED
    assert "the cluster refused the workflow" in job.status_text and "HTTP 422" in job.status_text
    assert argo_jobs.workflow(job_id) is None


def test_a_pod_the_cluster_refuses_fails_the_step_with_its_reason(argo_jobs: ArgoJobs, argo_engine: ArgoEngine) -> None:
    job_id = argo_jobs.submit(_spec(), ENV, inject={"algorithm": {"bad annotation key!": "x"}})
    job = argo_jobs.wait(job_id, timeout=60)
    assert job.status == JobStatus.ALGORITHM_FAILED
    assert "bad annotation key!" in job.status_text  # the apiserver's reason, as Argo recorded it


def test_killing_and_restarting_the_watcher_mid_run_loses_nothing(
    argo_settings: Settings, argo_jobs: ArgoJobs, stack: Stack, tmp_path: Path
) -> None:
    engine = EngineProcess(argo_settings, database_dsn(stack.settings), tmp_path / "engine.log")
    engine.start()
    try:
        # TTL 1 s: Argo deletes the Workflow while the watcher is down; the finalizer keeps it
        job_id = argo_jobs.submit(_spec(), ENV, inject={"algorithm": {DURATION: "4000"}}, ttl_seconds=1)
        argo_jobs.wait(job_id, lambda job: job.status == JobStatus.RUNNING_ALGORITHM, timeout=60)
        engine.kill()
        argo_jobs.wait_workflow(
            job_id, lambda w: bool(w["metadata"].get("deletionTimestamp")), timeout=60
        )  # finished, and deleted by its TTL
        mirrored = argo_jobs.store.get(job_id)
        assert mirrored is not None
        assert mirrored.status == JobStatus.RUNNING_ALGORITHM  # nobody mirrored it
        engine.start()
        job = argo_jobs.wait(job_id, timeout=60)
        assert job.status == JobStatus.JOB_FINISHED, job.status_text
        assert argo_jobs.statuses(job_id)[-1] == JobStatus.JOB_FINISHED
        end = time.monotonic() + 30
        while argo_jobs.workflow(job_id) is not None:  # released: the TTL deletion completes
            assert time.monotonic() < end, "the watcher did not release the workflow"
            time.sleep(0.2)
        assert engine.terminate() == 0
    finally:
        if engine.process is not None and engine.process.poll() is None:
            engine.kill()
    assert "argo engine + watcher running" in (tmp_path / "engine.log").read_text()


def test_an_expired_resource_version_leads_to_a_new_list(
    argo_settings: Settings, argo_jobs: ArgoJobs, pool: Pool, kube: KubeClient
) -> None:
    job_id = argo_jobs.submit(_spec(), ENV)
    dispatcher = ArgoEngine(argo_settings, pool, kube).start(watch=False)  # submits, does not mirror
    try:
        argo_jobs.wait_workflow(job_id, lambda w: w.get("status", {}).get("phase") == "Succeeded", timeout=60)
    finally:
        dispatcher.closing.set()
    watcher = Watcher(argo_settings, pool, kube)
    watcher.resource_version = "1"  # long compacted out of the apiserver's watch cache
    stop = threading.Event()
    with pytest.raises(KubeGoneError):
        next(iter(kube.watch_workflows(SELECTOR, "1", 5)))
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        job = argo_jobs.wait(job_id, timeout=30)
    finally:
        stop.set()
    assert job.status == JobStatus.JOB_FINISHED and watcher.resyncs >= 1


def test_a_job_whose_workflow_vanished_unseen_fails_at_the_next_list(
    argo_settings: Settings, argo_jobs: ArgoJobs, pool: Pool, kube: KubeClient
) -> None:
    """Its Workflow removed from the cluster (finalizer stripped, deleted) while no watcher ran: the next list
    fails the job, instead of leaving it running for ever."""
    job_id = argo_jobs.submit(_spec(), ENV, inject={"algorithm": {DURATION: "60000"}})
    dispatcher = ArgoEngine(argo_settings, pool, kube).start(watch=False)  # submits, does not mirror
    try:
        argo_jobs.wait_workflow(job_id, lambda w: w.get("status", {}).get("phase") == "Running", timeout=60)
    finally:
        dispatcher.closing.set()
    name = f"c2d-{job_id}"
    kube.patch_workflow(name, {"metadata": {"finalizers": None}})
    kube.delete_workflow(name)
    end = time.monotonic() + 30
    while argo_jobs.workflow(job_id) is not None:
        assert time.monotonic() < end, "the workflow was not deleted"
        time.sleep(0.1)
    watcher = Watcher(argo_settings, pool, kube)
    _changed(pool, job_id, "clock_timestamp()")
    watcher.resync()  # changed within the grace a list gives (its event may be on the way): left alone
    before = argo_jobs.store.get(job_id)
    assert before is not None
    assert not before.finished, before.status_text
    _changed(pool, job_id, "clock_timestamp() - interval '1 minute'")  # before that grace
    watcher.resync()
    job = argo_jobs.store.get(job_id)
    assert job is not None and job.finished
    assert job.status == JobStatus(before.status).failure, job.status_text
    assert job.status_text.endswith("the workflow disappeared from the cluster"), job.status_text
    assert job.results == []


def _changed(pool: Pool, job_id: str, when: str) -> None:
    """Set the job's last change (``updated_at``) to the SQL expression ``when``."""
    with pool.connection() as conn:
        conn.execute(f"UPDATE jobs SET updated_at = {when} WHERE job_id = %s".encode(), (job_id,))


NO_SECRETS = "c2d-e2e-no-secrets"  # a watcher identity that may mirror Workflows but not delete their Secrets
NO_SECRETS_RBAC = f"""\
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {NO_SECRETS}, namespace: c2d}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: {NO_SECRETS}, namespace: c2d}}
rules:
  - {{apiGroups: [argoproj.io], resources: [workflows], verbs: [get, list, watch, patch]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {NO_SECRETS}, namespace: c2d}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {NO_SECRETS}}}
subjects: [{{kind: ServiceAccount, name: {NO_SECRETS}, namespace: c2d}}]
"""


def test_a_release_the_cluster_refuses_holds_up_neither_the_mirror_nor_the_secret(
    argo_settings: Settings, argo_jobs: ArgoJobs, pool: Pool, kube: KubeClient, cluster: Cluster, tmp_path: Path
) -> None:
    """The watcher may not delete fetch Secrets, so every release fails (403): jobs are still mirrored, each
    Workflow keeps its finalizer and Secret, and a watcher allowed to release them later does."""
    cluster.kubectl("apply", "-f", "-", stdin=NO_SECRETS_RBAC)
    token = cluster.kubectl("-n", NAMESPACE, "create", "token", NO_SECRETS).stdout.strip()
    refused, _ = cluster.token_client(token, tmp_path)
    watcher = Watcher(argo_settings, pool, refused)
    # the second Workflow is listed after the first: a release failure that stopped the watcher's list (and
    # everything after it) would leave the second job unmirrored
    first = argo_jobs.submit(job_spec("print(1)", ["https://example.com/a.csv"], job_id="0" * 8 + token_hex(12)), ENV)
    second_spec = job_spec("print(2)", ["https://example.com/b.csv"], job_id="f" * 8 + token_hex(12))
    stop = threading.Event()
    loops = [threading.Thread(target=loop, args=(stop,), daemon=True) for loop in (watcher.run, watcher.run_release)]
    dispatcher = ArgoEngine(argo_settings, pool, kube).start(watch=False)
    for loop in loops:
        loop.start()
    try:
        assert argo_jobs.wait(first, timeout=60).status == JobStatus.JOB_FINISHED
        errors = {"engine": "argo", "kind": "release"}
        end = time.monotonic() + 30
        while not watcher.metrics.registry.get_sample_value("c2d_engine_errors_total", errors):
            assert time.monotonic() < end, "no release was tried"
            time.sleep(0.1)
        second = argo_jobs.submit(second_spec, ENV)
        assert argo_jobs.wait(second, timeout=60).status == JobStatus.JOB_FINISHED
    finally:
        stop.set()
        dispatcher.closing.set()
    assert watcher.releaser.waiting >= 2
    assert watcher.metrics.registry.get_sample_value("c2d_watcher_releases_waiting") == watcher.releaser.waiting
    allowed = Watcher(argo_settings, pool, kube)
    for job_id in (first, second):
        workflow = argo_jobs.workflow(job_id)
        assert workflow is not None and FINALIZER in workflow["metadata"]["finalizers"]
        assert kube.get_secret(secret_name(f"c2d-{job_id}"))  # kept while the Workflow is
        allowed.handle(workflow)
    assert allowed.releaser.release_due() == 2
    for job_id in (first, second):
        workflow = argo_jobs.workflow(job_id)
        assert workflow is not None and FINALIZER not in workflow["metadata"].get("finalizers", [])
        with pytest.raises(KubeApiError) as gone:
            kube.get_secret(secret_name(f"c2d-{job_id}"))
        assert gone.value.code == 404


def test_replaying_an_event_changes_nothing(
    argo_settings: Settings, argo_jobs: ArgoJobs, pool: Pool, kube: KubeClient, argo_engine: ArgoEngine
) -> None:
    job_id = argo_jobs.submit(_spec(), ENV, inject={"algorithm": {DURATION: "3000"}})
    argo_jobs.wait(job_id, lambda job: job.status == JobStatus.RUNNING_ALGORITHM)
    running = argo_jobs.workflow(job_id)
    assert running is not None
    argo_jobs.wait(job_id)
    final = argo_jobs.store.get(job_id)
    assert final is not None
    events = argo_jobs.store.events(job_id)
    watcher = Watcher(argo_settings, pool, kube)
    for replay in (running, running):  # an old event, twice: the final state stays final
        watcher.handle(replay)
    after = argo_jobs.store.get(job_id)
    assert after is not None
    assert (after.status, after.status_text, after.results, after.details) == (
        final.status,
        final.status_text,
        final.results,
        final.details,
    )
    assert argo_jobs.store.events(job_id) == events


def test_deleting_a_job_deletes_its_workflow(argo_engine: ArgoEngine, argo_jobs: ArgoJobs) -> None:
    job_id = argo_jobs.submit(_spec(), ENV)
    argo_jobs.wait(job_id)
    argo_jobs.wait_workflow(job_id, lambda w: FINALIZER not in w["metadata"].get("finalizers", []))
    assert argo_jobs.store.mark_removed(job_id)  # what DELETE /api/services/compute does
    argo_engine.wake()
    end = time.monotonic() + 30
    while argo_jobs.workflow(job_id) is not None:
        assert time.monotonic() < end, "the removed job's workflow was not deleted"
        time.sleep(0.1)
    assert "workflowDeletedAt" in argo_jobs.wait(job_id, lambda job: "workflowDeletedAt" in job.details).details
