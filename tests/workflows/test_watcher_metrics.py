"""The Argo watcher's metrics, without a cluster: Workflow objects as the apiserver sends them, mirrored into the
session's real Postgres by the real Watcher; the list and watch calls answered by a stand-in (no kube API)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from c2d.db.job_records import StepDetail
from c2d.db.jobs import JobStore
from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from c2d.status import JobStatus
from tests.scrape import Samples
from workflows.argo.kube import KubeClient
from workflows.argo.observe import StepChange, step_changes, templates
from workflows.argo.watcher import Watcher
from workflows.exceptions import KubeApiError, KubeGoneError
from workflows.metrics import STEP_FINISHED, STEP_STARTED
from workflows.spec import JobSpec

from .jobs import job_spec, make_environment, new_job, render

ENV = make_environment()
Node = tuple[str, datetime, datetime | None]  # phase, startedAt, finishedAt


def _time(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")  # as the apiserver writes it: whole seconds


def _workflow(
    base: dict[str, Any], nodes: dict[str, Node], phase: str = "Running", finished: datetime | None = None
) -> dict[str, Any]:
    """``base`` (the rendered Workflow) with the status Argo's controller would write."""
    name = base["metadata"]["name"]
    status: dict[str, Any] = {"phase": phase, "nodes": {}}
    if finished is not None:
        status["finishedAt"] = _time(finished)
    for i, (task, (node_phase, started, ended)) in enumerate(nodes.items()):
        node: dict[str, Any] = {
            "id": f"{name}-{i}",
            "name": f"{name}.{task}",
            "displayName": task,
            "type": "Pod",
            "templateName": task,
            "phase": node_phase,
            "startedAt": _time(started),
        }
        if ended is not None:
            node["finishedAt"] = _time(ended)
        if task == "output-publish" and node_phase == "Succeeded":
            node["outputs"] = {"parameters": [{"name": "results", "value": "[]"}]}
        status["nodes"][node["id"]] = node
    return {**base, "metadata": {**base["metadata"], "resourceVersion": "7"}, "status": status}


@pytest.fixture
def argo_job(stack: Stack, pool: Pool) -> Iterator[tuple[JobSpec, dict[str, Any]]]:
    """An Argo job row (as the provider writes it) and its rendered Workflow; finished at the end in any case."""
    spec = job_spec("print(1)", ["http://127.0.0.1:1/x"])
    workflow = cast(dict[str, Any], render(spec, ENV, stack.settings.store_dir))
    store = JobStore(pool)
    store.create(new_job(spec, ENV, workflow, "argo"))
    yield spec, workflow
    store.transition(spec.job_id, JobStatus.DATA_PROVISIONING_FAILED, source="test", finished=True, results=[])


class NoCluster:
    """The watcher's client where a test gives it Workflow objects itself: any call is a test failure."""

    namespace = "c2d"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the watcher called the cluster ({name}) in a test without one")


def _samples(watcher: Watcher) -> Samples:
    from prometheus_client import generate_latest

    return Samples.parse(generate_latest(watcher.metrics.registry).decode())


def test_steps_and_lags_are_observed_once_each(
    stack: Stack, pool: Pool, argo_job: tuple[JobSpec, dict[str, Any]]
) -> None:
    spec, base = argo_job
    watcher = Watcher(stack.settings, pool, cast(KubeClient, NoCluster()))
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20)
    running = _workflow(
        base,
        {
            "input-fetch": ("Succeeded", t0, t0 + timedelta(seconds=2)),
            "algorithm": ("Running", t0 + timedelta(seconds=2), None),
        },
    )
    watcher.handle(running)
    watcher.handle(running)  # the same object again (a resync, a replayed event): nothing new to observe
    store = JobStore(pool)
    job = store.get(spec.job_id)
    assert job is not None and job.status == JobStatus.RUNNING_ALGORITHM
    first = _samples(watcher)
    fetch = {"engine": "argo", "step": "input-fetch", "outcome": "Succeeded"}
    assert first.value("c2d_step_duration_seconds_count", **fetch) == 1
    assert first.value("c2d_step_duration_seconds_sum", **fetch) == 2
    assert first.value("c2d_watcher_mirror_lag_seconds_count", change="step_started") == 2
    assert first.value("c2d_watcher_mirror_lag_seconds_count", change="step_finished") == 1
    # input-fetch ended 18 s ago (whole seconds on the cluster: up to 1 s more)
    assert 17 <= first.value("c2d_watcher_mirror_lag_seconds_sum", change="step_finished") <= 20
    assert first.value("c2d_watcher_handle_seconds_count") == 2

    ended = t0 + timedelta(seconds=6)
    final = _workflow(
        base,
        {
            "input-fetch": ("Succeeded", t0, t0 + timedelta(seconds=2)),
            "algorithm": ("Succeeded", t0 + timedelta(seconds=2), t0 + timedelta(seconds=5)),
            "output-publish": ("Succeeded", t0 + timedelta(seconds=5), ended),
        },
        phase="Succeeded",
        finished=ended,
    )
    watcher.handle(final)
    watcher.handle(final)  # the job is final: left alone
    job = store.get(spec.job_id)
    assert job is not None and job.status == JobStatus.JOB_FINISHED
    last = _samples(watcher)
    for step, seconds in (("input-fetch", 2), ("algorithm", 3), ("output-publish", 1)):
        labels = {"engine": "argo", "step": step, "outcome": "Succeeded"}
        assert last.value("c2d_step_duration_seconds_count", **labels) == 1, step
        assert last.value("c2d_step_duration_seconds_sum", **labels) == seconds, step
    assert last.value("c2d_watcher_mirror_lag_seconds_count", change="step_started") == 3
    assert last.value("c2d_watcher_mirror_lag_seconds_count", change="step_finished") == 3
    assert last.value("c2d_watcher_mirror_lag_seconds_count", change="workflow_finished") == 1
    assert 13 <= last.value("c2d_watcher_mirror_lag_seconds_sum", change="workflow_finished") <= 16
    assert last.value("c2d_watcher_mirror_lag_seconds_bucket", change="workflow_finished", le="10.0") == 0


class Cluster:
    """Answers the watcher's list and watch: each watch does the next of ``watches`` (an exception to raise,
    or events to send); the last one also stops the watcher."""

    namespace = "c2d"

    def __init__(self, items: list[dict[str, Any]], watches: list[Exception | list[dict[str, Any]]]) -> None:
        self.items = items
        self.watches = watches
        self.stop = threading.Event()

    def list_workflows(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        return self.items, "100"

    def watch_workflows(self, selector: str, version: str, timeout: int) -> Iterator[dict[str, Any]]:
        action = self.watches.pop(0)
        if isinstance(action, Exception):
            raise action
        yield from action
        if not self.watches:
            self.stop.set()

    def get_workflow(self, name: str) -> dict[str, Any]:
        raise AssertionError(f"workflow {name} looked up: a job of another test would be settled")


def test_watch_events_lists_gone_and_errors_are_counted(
    stack: Stack, pool: Pool, argo_job: tuple[JobSpec, dict[str, Any]]
) -> None:
    _, base = argo_job
    now = datetime.now(UTC)
    running = _workflow(base, {"input-fetch": ("Running", now, None)})
    events: list[dict[str, Any]] = [
        {"type": "MODIFIED", "object": running},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "120"}}},
        {"type": "MODIFIED", "object": running},
    ]
    cluster = Cluster([running], [KubeGoneError(410, "too old"), KubeApiError(500, "apiserver restarting"), events])
    watcher = Watcher(stack.settings, pool, cast(KubeClient, cluster))
    watcher.run(cluster.stop)
    samples = _samples(watcher)
    assert samples.value("c2d_watcher_resyncs_total") == 3  # at start, after the 410, after the error
    assert samples.value("c2d_watcher_gone_total") == 1
    assert samples.value("c2d_engine_errors_total", engine="argo", kind="watch") == 1
    assert samples.value("c2d_watcher_events_total", type="MODIFIED") == 2
    assert samples.value("c2d_watcher_events_total", type="BOOKMARK") == 1
    assert samples.get("c2d_watcher_events_total", type="DELETED") == 0
    assert samples.value("c2d_watcher_mirror_lag_seconds_count", change="step_started") == 1  # once, of five


def test_step_changes_are_what_the_committed_details_lack() -> None:
    at = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)
    committed: dict[str, StepDetail] = {"input-fetch": {"phase": "Running", "startedAt": "2026-12-01T10:00:00Z"}}
    current: dict[str, StepDetail] = {
        "input-fetch": {"phase": "Failed", "startedAt": "2026-12-01T10:00:00Z", "finishedAt": "2026-12-01T10:00:04Z"},
        "algorithm": {"phase": "Omitted"},  # never ran: nothing to observe
        "output-publish": {"phase": "Running", "startedAt": "not a time"},
    }
    names = {"input-fetch": "fetch-template"}
    assert step_changes(committed, current, names) == [
        StepChange(STEP_FINISHED, "fetch-template", at + timedelta(seconds=4), "Failed", 4.0)
    ]
    assert step_changes({}, {"algorithm": current["input-fetch"]}, {}) == [
        StepChange(STEP_STARTED, "algorithm", at),
        StepChange(STEP_FINISHED, "algorithm", at + timedelta(seconds=4), "Failed", 4.0),
    ]
    assert step_changes(current, current, names) == []


def test_step_labels_are_template_names(stack: Stack) -> None:
    workflow = cast(
        dict[str, Any], render(job_spec("print(1)", ["http://127.0.0.1:1/x"]), ENV, stack.settings.store_dir)
    )
    assert templates(workflow) == {name: name for name in ("input-fetch", "algorithm", "output-publish")}
