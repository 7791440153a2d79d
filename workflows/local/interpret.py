"""Read a rendered Workflow (the dict stored in Postgres) into steps the local engine can run.

Supported: one DAG entrypoint of container templates; ``depends`` made of ``task[.Phase]`` terms
joined by ``&&``/``||`` (no parentheses) or ``dependencies``; ``{{workflow.parameters.*}}``,
``{{workflow.name}}`` and ``{{inputs.parameters.*}}``; command/args/workingDir; env values and
``secretKeyRef`` (from the secrets the engine holds); volumes
(volumeClaimTemplates and emptyDir as per-job folders, hostPath) and volumeMounts with subPath and
readOnly; resource limits; activeDeadlineSeconds (workflow and template); retryStrategy with
``asInt(lastRetry.exitCode) == N``; output parameters ``valueFrom.path``. Anything else that changes what
runs (a task's ``when`` or loops, a template's sidecars, scripts, ...) is refused with
:class:`UnsupportedWorkflowError` naming it, before the job starts.

The stored dict is read through Hera's generated models of Argo's schema (``hera.workflows.models``), so every
field is typed; a document that is not a Workflow at all is refused the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from hera.workflows import models
from pydantic import ValidationError

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


# Fields the local engine does not honour and that change what runs: refused when set.
_TASK_UNSUPPORTED = ("when", "with_items", "with_param", "with_sequence", "continue_on", "hooks", "on_exit", "inline")
_TEMPLATE_UNSUPPORTED = ("sidecars", "init_containers", "script", "resource", "container_set", "steps", "suspend")


def quantity(value: object) -> float:
    """A Kubernetes quantity ("512Mi", "1.5", "500m"; or Hera's Quantity/IntOrString model) as a number."""
    if isinstance(value, models.Quantity | models.IntOrString):
        value = value.root
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
    gpus: int  # whole GPUs (limit nvidia.com/gpu): the engine grants this many devices of their own
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
            mounts=[], egress=egress, cpu=None, memory=None, disk=None, pids=None, gpus=0, max_files=None,
            deadline=None, retry=None, outputs={}, depends=None,
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


def _refuse_set(model: models.DAGTask | models.Template, fields: tuple[str, ...], where: str) -> None:
    for name in fields:
        if getattr(model, name) is not None:
            wire = type(model).model_fields[name].alias or name
            raise UnsupportedWorkflowError(f"{where}: {wire!r} is not supported on the local engine")


def _retry(spec: models.RetryStrategy | None, where: str) -> Retry | None:
    if spec is None:
        return None
    exit_code = None
    if spec.expression:
        match = _RETRY_EXPR.match(spec.expression.strip())
        if not match:
            raise UnsupportedWorkflowError(f"{where}: retry expression {spec.expression!r} is not supported")
        exit_code = int(match.group(1))
    policy = spec.retry_policy or "OnFailure"
    if policy not in ("Always", "OnFailure", "OnError"):
        raise UnsupportedWorkflowError(f"{where}: retryPolicy {policy!r} is not supported")
    backoff = spec.backoff or models.Backoff()
    duration = (backoff.duration or "0").removesuffix("s")
    return Retry(
        limit=int(quantity(spec.limit or 0)),
        exit_code=exit_code,
        backoff_seconds=float(duration) if duration.replace(".", "", 1).isdigit() else 1.0,
        factor=float(quantity(backoff.factor or 1)),
    )


def _volumes(spec: models.WorkflowSpec) -> dict[str, Volume]:
    volumes: dict[str, Volume] = {}
    for claim in spec.volume_claim_templates or []:
        name = claim.metadata.name if claim.metadata else None
        if not name:
            raise UnsupportedWorkflowError("a volumeClaimTemplate has no metadata.name")
        requests = claim.spec.resources.requests if claim.spec and claim.spec.resources else None
        request = (requests or {}).get("storage")
        volumes[name] = Volume(name, "job", size=int(quantity(request)) if request else None)
    for volume in spec.volumes or []:
        name = volume.name
        if volume.empty_dir is not None:
            limit = volume.empty_dir.size_limit
            # The data volume is shared by the steps even when rendered as emptyDir (kwok tests).
            kind = "job" if name == "data" else "scratch"
            volumes[name] = Volume(name, kind, size=int(quantity(limit)) if limit else None)
        elif volume.host_path is not None:
            volumes[name] = Volume(name, "host", host_path=volume.host_path.path)
        else:
            raise UnsupportedWorkflowError(
                f"volume {name!r}: only volumeClaimTemplates, emptyDir and hostPath run locally"
            )
    return volumes


def _secret_value(item: models.EnvVar, secrets: Secrets, where: str) -> str | None:
    """An env var from ``valueFrom.secretKeyRef``, out of the secrets the engine holds (its settings)."""
    ref = item.value_from.secret_key_ref if item.value_from else None
    if ref is None:
        raise UnsupportedWorkflowError(f"{where}: env {item.name!r} must have a value or a secretKeyRef")
    value = (secrets.get(str(ref.name)) or {}).get(ref.key)
    if value is None and not ref.optional:
        raise UnsupportedWorkflowError(
            f"{where}: env {item.name!r} needs key {ref.key!r} of secret {ref.name!r}, which this node does not have"
        )
    return value


def _parameters(arguments: models.Arguments | None) -> dict[str, str]:
    parameters = (arguments.parameters if arguments else None) or []
    return {p.name: p.value if p.value is not None else "" for p in parameters}


def _step(task: models.DAGTask, template: models.Template, scope: dict[str, str], secrets: Secrets) -> Step:
    name = template.name or ""
    where = f"template {name!r}"
    container = template.container
    if container is None:
        raise UnsupportedWorkflowError(f"{where}: only container templates run on the local engine")
    _refuse_set(template, _TEMPLATE_UNSUPPORTED, where)
    local = dict(scope) | {f"inputs.parameters.{key}": value for key, value in _parameters(task.arguments).items()}
    command = [_substitute(a, local, where) for a in (container.command or []) + (container.args or [])]
    if not command:
        raise UnsupportedWorkflowError(
            f"{where}: a container needs a command (images' entrypoints are unknown locally)"
        )
    env = {}
    for item in container.env or []:
        if item.value is not None:
            env[item.name] = _substitute(item.value, local, where)
            continue
        value = _secret_value(item, secrets, where)
        if value is not None:
            env[item.name] = value
    mounts = [Mount(m.name, m.mount_path, m.sub_path, bool(m.read_only)) for m in container.volume_mounts or []]
    limits = container.resources.limits if container.resources else None
    limits = limits or {}
    metadata = template.metadata or models.Metadata()
    annotations = metadata.annotations or {}
    outputs = {
        p.name: p.value_from.path
        for p in (template.outputs.parameters or [] if template.outputs else [])
        if p.value_from is not None and p.value_from.path is not None
    }
    deadline = template.active_deadline_seconds
    return Step(
        task=task.name,
        template=name,
        stage=annotations.get(labels.STAGE, "algorithm"),
        image=container.image or "",
        command=command,
        env=env,
        working_dir=container.working_dir,
        mounts=mounts,
        egress=(metadata.labels or {}).get(labels.EGRESS) == "allowed",
        cpu=quantity(limits["cpu"]) if "cpu" in limits else None,
        memory=int(quantity(limits["memory"])) if "memory" in limits else None,
        disk=int(quantity(limits["ephemeral-storage"])) if "ephemeral-storage" in limits else None,
        pids=int(annotations[labels.PIDS]) if labels.PIDS in annotations else None,
        gpus=int(quantity(limits[labels.GPU_RESOURCE])) if labels.GPU_RESOURCE in limits else 0,
        max_files=int(annotations[labels.MAX_FILES]) if labels.MAX_FILES in annotations else None,
        deadline=int(quantity(deadline)) if deadline is not None else None,
        retry=_retry(template.retry_strategy, where),
        outputs=outputs,
        depends=_depends(task),
    )


def _depends(task: models.DAGTask) -> str | None:
    return task.depends or (" && ".join(task.dependencies) if task.dependencies else None)


def _order(tasks: list[models.DAGTask]) -> list[models.DAGTask]:
    """Topological order (stable); refuses cycles and unknown task references."""
    names = {task.name for task in tasks}
    deps = {task.name: set(_referenced(_depends(task) or "")) for task in tasks}
    for name, refs in deps.items():
        if refs - names:
            raise UnsupportedWorkflowError(f"task {name!r} depends on unknown task(s) {sorted(refs - names)}")
    ordered: list[models.DAGTask] = []
    done: set[str] = set()
    while len(ordered) < len(tasks):
        ready = [t for t in tasks if t.name not in done and deps[t.name] <= done]
        if not ready:
            raise UnsupportedWorkflowError("the DAG has a cycle")
        ordered.append(ready[0])
        done.add(ready[0].name)
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


def _parse(workflow: Mapping[str, object]) -> models.Workflow:
    try:
        return models.Workflow.model_validate(workflow)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the document"
        raise UnsupportedWorkflowError(f"not an Argo Workflow: {where}: {first['msg']}") from None


def interpret(workflow: Mapping[str, object], secrets: Secrets | None = None) -> Plan:
    """``secrets``: the Secrets the engine can resolve ``secretKeyRef`` env vars from (name → key → value)."""
    parsed = _parse(workflow)
    metadata, spec = parsed.metadata, parsed.spec
    name = metadata.name
    if not name:
        raise UnsupportedWorkflowError("the workflow has no metadata.name")
    templates = {t.name: t for t in spec.templates or [] if t.name}
    entry = templates.get(spec.entrypoint or "")
    if entry is None or entry.dag is None:
        raise UnsupportedWorkflowError("the entrypoint must be a DAG template")
    scope = {"workflow.name": name} | {f"workflow.parameters.{k}": v for k, v in _parameters(spec.arguments).items()}
    steps = []
    for task in _order(entry.dag.tasks):
        where = f"task {task.name!r}"
        if task.template_ref is not None or task.template is None:
            raise UnsupportedWorkflowError(f"{where}: only local templates run on the local engine")
        _refuse_set(task, _TASK_UNSUPPORTED, where)
        if task.template not in templates:
            raise UnsupportedWorkflowError(f"{where}: no template {task.template!r}")
        steps.append(_step(task, templates[task.template], scope, secrets or {}))
    volumes = _volumes(spec)
    for step in steps:
        for mount in step.mounts:
            if mount.volume not in volumes:
                raise UnsupportedWorkflowError(f"template {step.template!r} mounts unknown volume {mount.volume!r}")
    deadline = spec.active_deadline_seconds
    return Plan(
        name=name,
        steps=steps,
        volumes=volumes,
        deadline=int(deadline) if deadline is not None else None,
        labels=metadata.labels or {},
    )
