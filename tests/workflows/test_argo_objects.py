"""What the argo engine submits and how it reads Workflow status (no cluster needed)."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from c2d.status import STOPREQ_API, JobStatus
from workflows import labels
from workflows.argo.objects import FINALIZER, LostPod, lost_pod, prepare, read, secret_name
from workflows.builder import build_workflow
from workflows.exceptions import EngineError, OffloadedNodesError
from workflows.registry import BuildOptions
from workflows.templates import default_registry

from .jobs import job_spec, make_environment

SPEC = job_spec("print(1)", ["https://secret.example.com/data.csv?token=abc"])


def _workflow() -> dict[str, Any]:
    options = BuildOptions(results_target="pvc", volume="emptyDir")
    workflow: dict[str, Any] = build_workflow(SPEC, make_environment(), default_registry(), options).to_dict()
    return workflow


def _node(wf: str, task: str, phase: str, **extra: Any) -> dict[str, Any]:
    return {"name": f"{wf}.{task}", "displayName": task, "type": "Pod", "phase": phase, **extra}


def _with_nodes(nodes: list[dict[str, Any]], phase: str = "Running", **spec: Any) -> dict[str, Any]:
    workflow = _workflow()
    workflow["spec"].update(spec)
    workflow["status"] = {"phase": phase, "nodes": {f"id-{i}": node for i, node in enumerate(nodes)}}
    return workflow


def test_the_fetch_spec_moves_into_a_secret_and_never_stays_in_the_workflow() -> None:
    original = _workflow()
    submission = prepare(original, "c2d")
    text = json.dumps(submission.workflow)
    assert "secret.example.com" not in text and labels.FETCH_SPEC_REFERENCE not in text
    assert "secret.example.com" in submission.secret["stringData"]["fetch-spec"]  # type: ignore[index]
    assert submission.secret["metadata"]["name"] == secret_name(SPEC.workflow_name)  # type: ignore[index]
    assert submission.workflow["metadata"]["finalizers"] == [FINALIZER]
    assert "secret.example.com" in json.dumps(original)  # the input is not modified


def test_a_fetch_spec_referenced_elsewhere_is_refused() -> None:
    workflow = _workflow()
    workflow["spec"]["templates"][1]["container"]["args"] = [labels.FETCH_SPEC_REFERENCE]
    with pytest.raises(EngineError, match="refusing to submit it in clear"):
        prepare(workflow, "c2d")


def test_compressed_nodes_read_like_plain_ones() -> None:
    wf = SPEC.workflow_name
    nodes = [
        _node(wf, "input-fetch", "Succeeded"),
        _node(wf, "algorithm", "Failed", message="main: Error (exit code 3)", outputs={"exitCode": "3"}),
    ]
    plain = _with_nodes(nodes)
    packed = _with_nodes([])
    raw = json.dumps(plain["status"]["nodes"]).encode()
    packed["status"] = {"phase": "Running", "compressedNodes": base64.b64encode(gzip.compress(raw)).decode()}
    assert read(packed) == read(plain)
    assert read(plain).ocean_status(0).status == JobStatus.ALGORITHM_FAILED


def test_offloaded_nodes_need_argo_server() -> None:
    workflow = _with_nodes([])
    workflow["status"] = {"phase": "Running", "offloadNodeStatusVersion": "fnv:123"}
    with pytest.raises(OffloadedNodesError, match="C2D_ENGINE__ARGO__SERVER_URL"):
        read(workflow)
    loaded = read(workflow, lambda name: {"x": _node(name, "input-fetch", "Running")})
    assert loaded.ocean_status(0).status == JobStatus.CONFIGURING_VOLUMES


def test_a_retry_node_reports_its_last_attempt() -> None:
    wf = SPEC.workflow_name
    workflow = _with_nodes([], phase="Failed")
    workflow["status"]["nodes"] = {
        "r": {
            "name": f"{wf}.input-fetch",
            "type": "Retry",
            "phase": "Failed",
            "children": ["a0", "a1"],
            "message": "retryStrategy.expression evaluated to false",
        },
        "a0": {"name": f"{wf}.input-fetch(0)", "type": "Pod", "phase": "Failed", "outputs": {"exitCode": "75"}},
        "a1": {
            "name": f"{wf}.input-fetch(1)",
            "type": "Pod",
            "phase": "Failed",
            "outputs": {"exitCode": "32"},
            "message": "main: Error (exit code 32)",
        },
    }
    status = read(workflow).ocean_status(0)
    assert (status.status, status.text) == (
        JobStatus.ALGORITHM_PROVISIONING_FAILED,
        "Algorithm provisioning failed: main: Error (exit code 32)",
    )


def test_nodes_failed_by_a_stop_are_not_failures() -> None:
    wf = SPEC.workflow_name
    stopped = "Stopped with strategy 'Stop'"
    nodes = [
        _node(wf, "input-fetch", "Succeeded"),
        _node(wf, "algorithm", "Failed", message=stopped),
        _node(wf, "output-publish", "Failed", message=stopped),
    ]
    status = read(_with_nodes(nodes, phase="Failed", shutdown="Stop")).ocean_status(STOPREQ_API)
    assert (status.status, status.finished) == (JobStatus.JOB_FINISHED, True)


def test_a_workflow_that_fails_outside_any_step_is_not_reported_finished() -> None:
    workflow = _with_nodes([], phase="Error")
    workflow["status"]["message"] = "invalid spec: templates.x.steps must be..."
    status = read(workflow).ocean_status(0)
    assert status.status == JobStatus.DATA_PROVISIONING_FAILED and "invalid spec" in status.text


def test_a_workflow_that_fails_outside_any_step_after_its_algorithm_ran_is_an_algorithm_failure() -> None:
    wf = SPEC.workflow_name
    nodes = [_node(wf, "input-fetch", "Succeeded"), _node(wf, "algorithm", "Succeeded")]
    workflow = _with_nodes(nodes, phase="Error")
    workflow["status"]["message"] = 'pods "output-publish" is forbidden: exceeded quota'
    status = read(workflow).ocean_status(0)
    # the one rule (JobStatus.failure) every engine applies: 41 once the algorithm had started, else 31
    assert status.status == JobStatus.ALGORITHM_FAILED and "exceeded quota" in status.text


def test_results_come_from_the_publish_output_parameter() -> None:
    wf = SPEC.workflow_name
    results = [{"filename": "a.txt", "filesize": 1, "type": "output"}]
    parameters = [{"name": "results", "value": json.dumps(results)}]
    nodes = [
        _node(wf, "input-fetch", "Succeeded"),
        _node(wf, "algorithm", "Succeeded"),
        _node(wf, "output-publish", "Succeeded", outputs={"parameters": parameters}),
    ]
    view = read(_with_nodes(nodes, phase="Succeeded"))
    assert view.results == results and view.ocean_status(0).status == JobStatus.JOB_FINISHED
    nodes[2]["outputs"] = {"parameters": [{"name": "results", "value": "not json"}]}
    assert read(_with_nodes(nodes, phase="Succeeded")).results == []


def test_a_step_whose_image_cannot_be_pulled_is_named_without_the_registry_message() -> None:
    wf = SPEC.workflow_name
    message = 'ErrImagePull: failed to pull "python@sha256:00": Head "https://registry.internal/v2/": dial tcp'
    pending = _node(wf, "algorithm", "Pending", message=message, startedAt="2026-12-05T09:00:00Z")
    view = read(_with_nodes([_node(wf, "input-fetch", "Succeeded"), pending]))
    assert view.image_failure is not None
    assert (view.image_failure.task, view.image_failure.reason, view.image_failure.final) == (
        "algorithm",
        "ErrImagePull",
        False,
    )
    assert view.image_failure.image == SPEC.container.reference and view.image_failure.since == "2026-12-05T09:00:00Z"
    never = _node(wf, "input-fetch", "Pending", message="ErrImageNeverPull: Container image is not present")
    assert read(_with_nodes([never])).image_failure.final  # type: ignore[union-attr]
    waiting = _node(wf, "input-fetch", "Pending", message="PodInitializing")
    assert read(_with_nodes([waiting])).image_failure is None
    assert read(_with_nodes([_node(wf, "input-fetch", "Failed", message=message)])).image_failure is None


NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def _pod(phase: str, deleted: timedelta | None, conditions: dict[str, tuple[str, str]]) -> dict[str, Any]:
    """A job pod as the API shows it; ``deleted``: its deletion time relative to NOW."""
    meta: dict[str, Any] = {
        "name": "c2d-j1-algorithm-123",
        "labels": {"workflows.argoproj.io/workflow": "c2d-j1"},
        "annotations": {"workflows.argoproj.io/node-name": "c2d-j1.algorithm(0)"},
    }
    if deleted is not None:
        meta["deletionTimestamp"] = (NOW + deleted).isoformat().replace("+00:00", "Z")
    status = [{"type": kind, "status": value, "reason": reason} for kind, (value, reason) in conditions.items()]
    return {"metadata": meta, "spec": {"nodeName": "node-a"}, "status": {"phase": phase, "conditions": status}}


EVICTED = {"DisruptionTarget": ("True", "DeletionByTaintManager"), "Ready": ("False", "")}


def test_a_pod_evicted_from_a_node_that_stopped_answering_is_lost_at_once() -> None:
    lost = lost_pod(_pod("Running", timedelta(seconds=30), EVICTED), NOW)
    assert lost == LostPod("c2d-j1", "algorithm", "node-a", "evicted from a node that stopped answering")


def test_a_deleted_pod_that_no_kubelet_ends_is_lost_after_the_grace() -> None:
    ready = {"Ready": ("True", "")}
    assert lost_pod(_pod("Running", timedelta(seconds=-29), ready), NOW) is None  # its kubelet may still end it
    lost = lost_pod(_pod("Pending", timedelta(seconds=-31), ready), NOW)
    assert lost is not None and lost.reason == "deleted, and no kubelet ended it for 31 s"


@pytest.mark.parametrize(
    ("phase", "deleted", "conditions"),
    [
        ("Running", None, EVICTED),  # not deleted
        ("Failed", timedelta(seconds=-600), EVICTED),  # ended: Argo reads its outcome
        ("Succeeded", timedelta(seconds=-600), {}),
        # evicted by an operator's NoExecute taint from a live node: the kubelet ends it
        ("Running", timedelta(seconds=20), {"DisruptionTarget": ("True", "DeletionByTaintManager")}),
        ("Running", timedelta(seconds=20), {"Ready": ("False", "")}),  # a stop on a node that answers
    ],
)
def test_pods_that_a_kubelet_ends_or_ended_are_not_lost(
    phase: str, deleted: timedelta | None, conditions: dict[str, tuple[str, str]]
) -> None:
    assert lost_pod(_pod(phase, deleted, conditions), NOW) is None


def test_a_pod_without_argo_s_workflow_label_is_not_a_job_pod() -> None:
    pod = _pod("Running", timedelta(seconds=30), EVICTED)
    pod["metadata"]["labels"] = {}
    assert lost_pod(pod, NOW) is None
