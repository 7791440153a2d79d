"""Read a rendered Workflow (the dict stored in Postgres) into steps the local engine can run.

Supported: one DAG entrypoint of container templates; ``depends`` made of ``task[.Phase]`` terms
joined by ``&&``/``||`` (no parentheses) or ``dependencies``; ``{{workflow.parameters.*}}``,
``{{workflow.name}}`` and ``{{inputs.parameters.*}}``; command/args/workingDir; env values and
``secretKeyRef`` (from the secrets the engine holds); volumes
(volumeClaimTemplates and emptyDir as per-job folders, hostPath) and volumeMounts with subPath and
readOnly; resource limits; activeDeadlineSeconds (workflow and template); retryStrategy with
``asInt(lastRetry.exitCode) == N``; output parameters ``valueFrom.path``. Anything else is refused
with :class:`UnsupportedWorkflowError` naming it, before the job starts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workflows import labels
from workflows.exceptions import UnsupportedWorkflowError

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
_RETRY_EXPR = re.compile(r"^asInt\(lastRetry\.exitCode\)\s*==\s*(\d+)$")
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_SUFFIX = {
    None: 1,
    "m": 0.001,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
Secrets = Mapping[str, Mapping[str, str]]
_PHASES = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned")


def quantity(value: object) -> float:
    """A Kubernetes quantity ("512Mi", "1.5", "500m") as a number."""
    match = _QUANTITY.match(str(value))
    if not match:
        raise UnsupportedWorkflowError(f"resource quantity {value!r} is not understood")
    return float(match.group(1)) * _SUFFIX[match.group(2)]


@dataclass(frozen=True)
class Mount:
    volume: str
    path: str
    sub_path: str | None
    read_only: bool


@dataclass(frozen=True)
class Retry:
    limit: int
    exit_code: int | None  # retry only on this exit code; None = on any failure
    backoff_seconds: float
    factor: float


@dataclass(frozen=True)
class Step:
    task: str
    template: str
    stage: str
    image: str
    command: list[str]
    env: dict[str, str]
    working_dir: str | None
    mounts: list[Mount]
    egress: bool
    cpu: float | None
    memory: int | None
    disk: int | None
    pids: int | None
    max_files: int | None
    deadline: int | None
    retry: Retry | None
    outputs: dict[str, str]  # output parameter -> path inside the step
    depends: str | None

    @classmethod
    def bare(
        cls,
        task: str,
        stage: str,
        image: str,
        command: list[str],
        *,
        env: dict[str, str] | None = None,
        egress: bool = False,
    ) -> Step:
        """A step outside any Workflow (the warm runner itself, benchmarks, tests): named ``task`` after its
        template, no mounts, limits, deadline, retry, outputs or dependencies."""
        return cls(
            task=task, template=task, stage=stage, image=image, command=command, env=env or {}, working_dir=None,
            mounts=[], egress=egress, cpu=None, memory=None, disk=None, pids=None, max_files=None, deadline=None,
            retry=None, outputs={}, depends=None,
        )  # fmt: skip


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # "job" (shared by all steps of the job), "scratch" (fresh per step) or "host"
    host_path: str | None = None
    size: int | None = None  # bytes: a claim's storage request, an emptyDir's sizeLimit


@dataclass
class Plan:
    name: str
    steps: list[Step]
    volumes: dict[str, Volume]
    deadline: int | None
    labels: dict[str, str] = field(default_factory=dict)

    def step(self, task: str) -> Step:
        return next(step for step in self.steps if step.task == task)

    @property
    def disk_bytes(self) -> int | None:
        """The size of the job's disk: its job volumes' sizes summed (None if one has no size)."""
        sizes = [volume.size for volume in self.volumes.values() if volume.kind == "job"]
        known = [size for size in sizes if size is not None]
        return sum(known) if sizes and len(known) == len(sizes) else None

    @property
    def max_files(self) -> int:
        """The largest file cap of its steps (0: none has one)."""
        return max((step.max_files or 0 for step in self.steps), default=0)


def _substitute(text: str, scope: dict[str, str], where: str) -> str:
    def replace(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in scope:
            raise UnsupportedWorkflowError(f"{where}: unknown placeholder {{{{{key}}}}}")
        return scope[key]

    return _PLACEHOLDER.sub(replace, text)


def _retry(spec: dict[str, Any] | None, where: str) -> Retry | None:
    if not spec:
        return None
    expression = spec.get("expression")
    exit_code = None
    if expression:
        match = _RETRY_EXPR.match(expression.strip())
        if not match:
            raise UnsupportedWorkflowError(f"{where}: retry expression {expression!r} is not supported")
        exit_code = int(match.group(1))
    policy = spec.get("retryPolicy", "OnFailure")
    if policy not in ("Always", "OnFailure", "OnError"):
        raise UnsupportedWorkflowError(f"{where}: retryPolicy {policy!r} is not supported")
    backoff = spec.get("backoff") or {}
    duration = str(backoff.get("duration", "0")).removesuffix("s")
    return Retry(
        limit=int(quantity(spec.get("limit", 0))),
        exit_code=exit_code,
        backoff_seconds=float(duration) if duration.replace(".", "", 1).isdigit() else 1.0,
        factor=float(quantity(backoff.get("factor", 1))),
    )


def _volumes(spec: dict[str, Any]) -> dict[str, Volume]:
    volumes: dict[str, Volume] = {}
    for claim in spec.get("volumeClaimTemplates") or []:
        name = claim["metadata"]["name"]
        request = (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")
        volumes[name] = Volume(name, "job", size=int(quantity(request)) if request else None)
    for volume in spec.get("volumes") or []:
        name = volume["name"]
        if "emptyDir" in volume:
            limit = (volume["emptyDir"] or {}).get("sizeLimit")
            # The data volume is shared by the steps even when rendered as emptyDir (kwok tests).
            kind = "job" if name == "data" else "scratch"
            volumes[name] = Volume(name, kind, size=int(quantity(limit)) if limit else None)
        elif "hostPath" in volume:
            volumes[name] = Volume(name, "host", host_path=volume["hostPath"]["path"])
        else:
            raise UnsupportedWorkflowError(
                f"volume {name!r}: only volumeClaimTemplates, emptyDir and hostPath run locally"
            )
    return volumes


def _secret_value(item: dict[str, Any], secrets: Secrets, where: str) -> str | None:
    """An env var from ``valueFrom.secretKeyRef``, out of the secrets the engine holds (its settings)."""
    ref = (item.get("valueFrom") or {}).get("secretKeyRef")
    if not ref:
        raise UnsupportedWorkflowError(f"{where}: env {item['name']!r} must have a value or a secretKeyRef")
    value = (secrets.get(str(ref.get("name"))) or {}).get(str(ref.get("key")))
    if value is None and not ref.get("optional"):
        raise UnsupportedWorkflowError(
            f"{where}: env {item['name']!r} needs key {ref.get('key')!r} of secret {ref.get('name')!r}, "
            "which this node does not have"
        )
    return value


def _step(task: dict[str, Any], template: dict[str, Any], scope: dict[str, str], secrets: Secrets) -> Step:
    name = template["name"]
    where = f"template {name!r}"
    container = template.get("container")
    if container is None:
        raise UnsupportedWorkflowError(f"{where}: only container templates run on the local engine")
    params = {p["name"]: str(p.get("value", "")) for p in (task.get("arguments") or {}).get("parameters") or []}
    local = dict(scope) | {f"inputs.parameters.{key}": value for key, value in params.items()}
    command = [
        _substitute(str(a), local, where) for a in (container.get("command") or []) + (container.get("args") or [])
    ]
    if not command:
        raise UnsupportedWorkflowError(
            f"{where}: a container needs a command (images' entrypoints are unknown locally)"
        )
    env = {}
    for item in container.get("env") or []:
        if "value" in item:
            env[item["name"]] = _substitute(str(item["value"]), local, where)
            continue
        value = _secret_value(item, secrets, where)
        if value is not None:
            env[item["name"]] = value
    mounts = [
        Mount(m["name"], m["mountPath"], m.get("subPath"), bool(m.get("readOnly", False)))
        for m in container.get("volumeMounts") or []
    ]
    limits = (container.get("resources") or {}).get("limits") or {}
    metadata = template.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    outputs = {
        p["name"]: p["valueFrom"]["path"]
        for p in (template.get("outputs") or {}).get("parameters") or []
        if "path" in (p.get("valueFrom") or {})
    }
    return Step(
        task=task["name"],
        template=name,
        stage=annotations.get(labels.STAGE, "algorithm"),
        image=container.get("image", ""),
        command=command,
        env=env,
        working_dir=container.get("workingDir"),
        mounts=mounts,
        egress=(metadata.get("labels") or {}).get(labels.EGRESS) == "allowed",
        cpu=quantity(limits["cpu"]) if "cpu" in limits else None,
        memory=int(quantity(limits["memory"])) if "memory" in limits else None,
        disk=int(quantity(limits["ephemeral-storage"])) if "ephemeral-storage" in limits else None,
        pids=int(annotations[labels.PIDS]) if labels.PIDS in annotations else None,
        max_files=int(annotations[labels.MAX_FILES]) if labels.MAX_FILES in annotations else None,
        deadline=int(quantity(template["activeDeadlineSeconds"])) if "activeDeadlineSeconds" in template else None,
        retry=_retry(template.get("retryStrategy"), where),
        outputs=outputs,
        depends=task.get("depends") or (" && ".join(task["dependencies"]) if task.get("dependencies") else None),
    )


def _order(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Topological order (stable); refuses cycles and unknown task references."""
    names = {task["name"] for task in tasks}
    deps = {
        task["name"]: set(_referenced(task.get("depends") or " && ".join(task.get("dependencies") or [])))
        for task in tasks
    }
    for name, refs in deps.items():
        if refs - names:
            raise UnsupportedWorkflowError(f"task {name!r} depends on unknown task(s) {sorted(refs - names)}")
    ordered: list[dict[str, Any]] = []
    done: set[str] = set()
    while len(ordered) < len(tasks):
        ready = [t for t in tasks if t["name"] not in done and deps[t["name"]] <= done]
        if not ready:
            raise UnsupportedWorkflowError("the DAG has a cycle")
        ordered.append(ready[0])
        done.add(ready[0]["name"])
    return ordered


def _terms(expression: str) -> list[list[str]]:
    if "(" in expression or "!" in expression:
        raise UnsupportedWorkflowError(f"depends {expression!r}: parentheses and negation are not supported")
    return [[term.strip() for term in conj.split("&&")] for conj in expression.split("||")]


def _referenced(expression: str) -> list[str]:
    if not expression.strip():
        return []
    return [term.split(".")[0] for conj in _terms(expression) for term in conj]


def depends_met(expression: str | None, phases: dict[str, str]) -> bool:
    """Evaluate ``depends`` against finished tasks' phases (Argo's names: Errored = Error)."""
    if not expression:
        return True
    for conj in _terms(expression):
        ok = True
        for term in conj:
            task, _, wanted = term.partition(".")
            phase = phases.get(task)
            wanted = wanted or "Succeeded"
            if wanted not in _PHASES:
                raise UnsupportedWorkflowError(f"depends term {term!r}: unknown phase")
            actual = "Errored" if phase == "Error" else phase
            if actual != wanted:
                ok = False
                break
        if ok:
            return True
    return False


def interpret(workflow: dict[str, Any], secrets: Secrets | None = None) -> Plan:
    """``secrets``: the Secrets the engine can resolve ``secretKeyRef`` env vars from (name → key → value)."""
    metadata = workflow.get("metadata") or {}
    spec = workflow.get("spec") or {}
    name = metadata.get("name")
    if not name:
        raise UnsupportedWorkflowError("the workflow has no metadata.name")
    templates = {t["name"]: t for t in spec.get("templates") or []}
    entry = templates.get(spec.get("entrypoint", ""))
    if entry is None or "dag" not in entry:
        raise UnsupportedWorkflowError("the entrypoint must be a DAG template")
    scope = {"workflow.name": name} | {
        f"workflow.parameters.{p['name']}": str(p.get("value", ""))
        for p in (spec.get("arguments") or {}).get("parameters") or []
    }
    steps = []
    for task in _order(entry["dag"].get("tasks") or []):
        if "templateRef" in task or "template" not in task:
            raise UnsupportedWorkflowError(f"task {task['name']!r}: only local templates run on the local engine")
        if task["template"] not in templates:
            raise UnsupportedWorkflowError(f"task {task['name']!r}: no template {task['template']!r}")
        steps.append(_step(task, templates[task["template"]], scope, secrets or {}))
    volumes = _volumes(spec)
    for step in steps:
        for mount in step.mounts:
            if mount.volume not in volumes:
                raise UnsupportedWorkflowError(f"template {step.template!r} mounts unknown volume {mount.volume!r}")
    deadline = spec.get("activeDeadlineSeconds")
    return Plan(
        name=name,
        steps=steps,
        volumes=volumes,
        deadline=int(deadline) if deadline is not None else None,
        labels=metadata.get("labels") or {},
    )
