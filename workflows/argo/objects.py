"""The Argo engine's view of Workflow objects: what is submitted, and what a Workflow's status means.

Submission (:func:`prepare`): the job's rendered Workflow (the same object the local engine runs)
with the decrypted fetch spec moved out of the Workflow into a Secret that only input-fetch reads
as an env var, and a finalizer so the object cannot vanish (TTL, ``kubectl delete``) before the
watcher has recorded its final state.

Reading (:func:`read`): nodes (``status.nodes``, or gzip+base64 ``status.compressedNodes``),
one :class:`StepState` per pipeline task in DAG order, the Ocean status through the shared
mapping, the result list from output-publish's ``results`` output parameter.
"""

from __future__ import annotations

import base64
import copy
import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from c2d.db.job_records import ResultEntry, StepDetail
from c2d.status import STOPREQ_DEADLINE, JobStatus
from workflows import labels
from workflows.argo.observe import cluster_time
from workflows.builder import PUBLISH
from workflows.exceptions import EngineError, OffloadedNodesError
from workflows.status_map import OceanStatus, StepState, ocean_status

FINALIZER = f"{labels.PREFIX}/mirror"
FINISHED_PHASES = frozenset({"Succeeded", "Failed", "Error"})
STOPPED = "Stopped with strategy"  # Argo's message on nodes it failed because of spec.shutdown
# The kubelet's reasons for a container whose image it cannot get; Argo puts "<reason>: <message>" into the
# node of a Pending pod. The first two may pass (a registry that answers again); the last two never do.
IMAGE_PULL_RETRYING = ("ErrImagePull", "ImagePullBackOff")
IMAGE_PULL_FINAL = ("ErrImageNeverPull", "InvalidImageName")
# Argo's marks on the pods it creates: the Workflow (label) and the node of the step (annotation, "<wf>.<task>"
# or "<wf>.<task>(<attempt>)").
WORKFLOW_LABEL = "workflows.argoproj.io/workflow"
NODE_NAME = "workflows.argoproj.io/node-name"
# A pod the cluster deleted that is still Pending/Running this long after its deletion time has no kubelet
# to end it: its node is gone.
UNCONFIRMED_DELETION = timedelta(seconds=30)
EVICTED_BY_TAINT = "DeletionByTaintManager"  # the DisruptionTarget reason of a pod evicted by a NoExecute taint


@dataclass(frozen=True)
class ImageFailure:
    """A step whose container image the node cannot get: the job can never run as it is."""

    task: str
    image: str
    reason: str  # the kubelet's reason only: its message names registry internals
    final: bool  # no retry can help (otherwise: retried with back-off until the watcher's grace ends)
    since: str | None  # the step's startedAt (RFC 3339)


@dataclass(frozen=True)
class LostPod:
    """A job pod whose node stopped answering: the cluster deleted it, but no kubelet is there to end it."""

    workflow: str
    task: str
    node: str
    reason: str


@dataclass(frozen=True)
class Submission:
    workflow: dict[str, Any]
    secret: dict[str, Any] | None


def secret_name(workflow_name: str) -> str:
    return f"{workflow_name}-fetch"


def prepare(workflow: dict[str, Any], namespace: str) -> Submission:
    """The objects to create for a job's Workflow (the input is not modified)."""
    body = copy.deepcopy(workflow)
    meta = body.setdefault("metadata", {})
    meta["namespace"] = namespace
    meta["finalizers"] = sorted({*meta.get("finalizers", []), FINALIZER})
    name = str(meta["name"])
    spec = body.setdefault("spec", {})
    parameters = (spec.get("arguments") or {}).get("parameters") or []
    fetch = [p for p in parameters if p.get("name") == labels.FETCH_SPEC_PARAMETER]
    if not fetch:
        return Submission(body, None)
    spec["arguments"]["parameters"] = [p for p in parameters if p.get("name") != labels.FETCH_SPEC_PARAMETER]
    reference = {"secretKeyRef": {"name": secret_name(name), "key": labels.FETCH_SPEC_PARAMETER}}
    for template in spec.get("templates") or []:
        for env in (template.get("container") or {}).get("env") or []:
            if env.get("value") == labels.FETCH_SPEC_REFERENCE:
                env.pop("value")
                env["valueFrom"] = copy.deepcopy(reference)
    if labels.FETCH_SPEC_REFERENCE in json.dumps(body):
        raise EngineError("the fetch spec is referenced outside a container env var; refusing to submit it in clear")
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": secret_name(name), "namespace": namespace, "labels": dict(meta.get("labels") or {})},
        "stringData": {labels.FETCH_SPEC_PARAMETER: str(fetch[0].get("value", ""))},
    }
    return Submission(body, secret)


def owner_reference(workflow: dict[str, Any]) -> dict[str, Any]:
    meta = workflow["metadata"]
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": meta["name"], "uid": meta["uid"]}


# -- reading pods ---------------------------------------------------------------------------------
def node_name(pod: dict[str, Any]) -> str:
    """The Argo node a pod runs (``<workflow>.<task>``, with ``(<attempt>)`` for a retried step)."""
    return str(((pod.get("metadata") or {}).get("annotations") or {}).get(NODE_NAME, ""))


def lost_pod(pod: dict[str, Any], now: datetime) -> LostPod | None:
    """The pod, if it is a job pod left on a lost node. A pod is lost once the cluster deleted it while it is
    still Pending or Running and either the taint manager evicted it from a node that is not ready (the node
    controller marked the pod not Ready), or no kubelet ended it within :data:`UNCONFIRMED_DELETION` of its
    deletion time. A pod being stopped on a live node is neither: its kubelet ends it."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    workflow = (meta.get("labels") or {}).get(WORKFLOW_LABEL)
    deleted_at = cluster_time(meta.get("deletionTimestamp"))
    if not workflow or deleted_at is None or status.get("phase") not in ("Pending", "Running"):
        return None
    conditions = {str(c.get("type")): c for c in status.get("conditions") or [] if isinstance(c, dict)}
    disruption = conditions.get("DisruptionTarget") or {}
    evicted = disruption.get("status") == "True" and disruption.get("reason") == EVICTED_BY_TAINT
    not_ready = (conditions.get("Ready") or {}).get("status") == "False"
    if evicted and not_ready:
        reason = "evicted from a node that stopped answering"
    elif now - deleted_at >= UNCONFIRMED_DELETION:
        reason = f"deleted, and no kubelet ended it for {int((now - deleted_at).total_seconds())} s"
    else:
        return None
    task = node_name(pod).removeprefix(f"{workflow}.").split("(", 1)[0]
    return LostPod(str(workflow), task, str((pod.get("spec") or {}).get("nodeName") or "?"), reason)


# -- reading a Workflow's status ------------------------------------------------------------------
def nodes_of(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    status = workflow.get("status") or {}
    nodes: dict[str, dict[str, Any]] | None = status.get("nodes")
    if nodes:
        return nodes
    if status.get("compressedNodes"):
        raw = gzip.decompress(base64.b64decode(status["compressedNodes"]))
        decoded: dict[str, dict[str, Any]] = json.loads(raw)
        return decoded
    if status.get("offloadNodeStatusVersion"):
        raise OffloadedNodesError(str(workflow["metadata"]["name"]))
    return {}


def pipeline(workflow: dict[str, Any]) -> list[tuple[str, str]]:
    """(task, stage) of each pipeline task, in DAG order."""
    spec = workflow.get("spec") or {}
    templates = {t["name"]: t for t in spec.get("templates") or []}
    entry = templates.get(spec.get("entrypoint", ""), {})
    steps = []
    for task in (entry.get("dag") or {}).get("tasks") or []:
        template = templates.get(task.get("template", ""), {})
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        steps.append((str(task["name"]), str(annotations.get(labels.STAGE, "algorithm"))))
    return steps


def _attempt(node: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The node that says what happened: a Retry node's last attempt, else the node itself."""
    if node.get("type") == "Retry" and node.get("children"):
        return nodes.get(node["children"][-1], node)
    return node


def _exit_code(node: dict[str, Any]) -> int | None:
    code = (node.get("outputs") or {}).get("exitCode")
    try:
        return int(code) if code is not None else None
    except ValueError:
        return None


def _phase(node: dict[str, Any], shutdown: bool) -> str | None:
    """A node failed by a stop request (``spec.shutdown``) did not fail on its own: it was omitted."""
    phase = node.get("phase")
    if shutdown and phase in ("Failed", "Error") and str(node.get("message", "")).startswith(STOPPED):
        return "Omitted"
    return phase


@dataclass(frozen=True)
class WorkflowView:
    name: str
    job_id: str | None
    phase: str
    message: str
    finished: bool
    steps: list[StepState]
    step_details: dict[str, StepDetail]
    results: list[ResultEntry] = field(default_factory=list)
    image_failure: ImageFailure | None = None

    @property
    def deadline_hit(self) -> bool:
        texts = [self.message] + [s.message or "" for s in self.steps if s.stage == "algorithm"]
        return any("deadline" in text.lower() for text in texts)

    def ocean_status(self, stopreq: int) -> OceanStatus:
        if self.deadline_hit and not stopreq:
            stopreq = STOPREQ_DEADLINE
        status = ocean_status(self.steps, workflow_done=self.finished, stopreq=stopreq)
        if self.finished and self.phase != "Succeeded" and status.status == JobStatus.JOB_FINISHED and not stopreq:
            # The workflow failed outside any step (invalid spec, pod creation refused, ...): at the status its
            # steps had reached
            code = ocean_status(self.steps, workflow_done=False, stopreq=stopreq).status.failure
            return OceanStatus(code, f"{code.text}: {self.message or self.phase}", True)
        return status


NodesLoader = Callable[[str], dict[str, dict[str, Any]]]


def read(workflow: dict[str, Any], nodes_loader: NodesLoader | None = None) -> WorkflowView:
    """What a Workflow object says about its job. ``nodes_loader`` hydrates offloaded nodes."""
    meta = workflow.get("metadata") or {}
    name = str(meta.get("name", ""))
    status = workflow.get("status") or {}
    try:
        nodes = nodes_of(workflow)
    except OffloadedNodesError:
        if nodes_loader is None:
            raise
        nodes = nodes_loader(name)
    by_name = {str(node.get("name")): node for node in nodes.values()}
    shutdown = bool((workflow.get("spec") or {}).get("shutdown"))
    steps: list[StepState] = []
    details: dict[str, StepDetail] = {}
    results: list[ResultEntry] = []
    image_failure: ImageFailure | None = None
    for task, stage in pipeline(workflow):
        node = by_name.get(f"{name}.{task}")
        if node is None:
            steps.append(StepState(task, stage))
            continue
        attempt = _attempt(node, nodes)
        code = _exit_code(node) if _exit_code(node) is not None else _exit_code(attempt)
        message = attempt.get("message") or node.get("message") or None
        phase = _phase(node, shutdown)
        steps.append(StepState(task, stage, phase, code, message))
        details[task] = cast(
            StepDetail,
            {
                key: value
                for key, value in (
                    ("phase", phase),
                    ("exitCode", code),
                    ("message", message),
                    ("startedAt", node.get("startedAt")),
                    ("finishedAt", node.get("finishedAt")),
                )
                if value is not None
            },
        )
        if task == PUBLISH:
            results = _results(node)
        if image_failure is None and attempt.get("phase") == "Pending":
            image_failure = _image_failure(task, attempt, workflow)
    phase = str(status.get("phase") or "Pending")
    return WorkflowView(
        name=name,
        job_id=(meta.get("labels") or {}).get(labels.JOB_ID),
        phase=phase,
        message=str(status.get("message") or ""),
        finished=phase in FINISHED_PHASES,
        steps=steps,
        step_details=details,
        results=results,
        image_failure=image_failure,
    )


def _image_failure(task: str, node: dict[str, Any], workflow: dict[str, Any]) -> ImageFailure | None:
    reason = str(node.get("message") or "").split(":", 1)[0].strip()
    if reason not in IMAGE_PULL_RETRYING + IMAGE_PULL_FINAL:
        return None
    template: dict[str, Any] = next(
        (t for t in (workflow.get("spec") or {}).get("templates") or [] if t.get("name") == task), {}
    )
    image = str((template.get("container") or {}).get("image") or "?")
    return ImageFailure(task, image, reason, reason in IMAGE_PULL_FINAL, node.get("startedAt"))


def _results(node: dict[str, Any]) -> list[ResultEntry]:
    for parameter in (node.get("outputs") or {}).get("parameters") or []:
        if parameter.get("name") != "results":
            continue
        try:
            value = json.loads(parameter.get("value") or "[]")
        except ValueError:
            return []
        if isinstance(value, list) and all(isinstance(item, dict) for item in value):
            return value
    return []
