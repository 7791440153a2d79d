"""The step-template registry: each pipeline step is a Python function returning a Hera template.

A developer adds a step by writing one function and registering it under a name::

    def my_filter(ctx: StepContext) -> Container:
        return Container(name="my-filter", ...)

    def register(registry: StepRegistry) -> None:
        registry.add("my-filter", "filter", my_filter)

and naming it in a compute environment's ``pipeline`` (modules listed in the setting
``C2D_ENGINE__STEP_MODULES`` are imported and their ``register`` called). See ``docs/steps.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from hera.workflows import Container
from pydantic import BaseModel

from c2d.environments import ComputeEnvironment
from c2d.placement import Toleration
from c2d.settings import ArgoSettings, EngineSettings, S3Settings, Settings
from workflows.exceptions import UnknownStepError, WorkflowError
from workflows.labels import STAGES
from workflows.spec import JobSpec


def _default(model: type[BaseModel], name: str) -> Any:
    """A setting's default, read from its settings model: defaults have one home, ``c2d/settings.py``."""
    return model.model_fields[name].get_default(call_default_factory=True)


@dataclass(frozen=True)
class BuildOptions:
    """Engine-independent choices of how a job's Workflow looks. :meth:`for_job` takes them from the settings;
    the defaults (the settings' own) serve tests and tools that build a Workflow without a node."""

    namespace: str = _default(EngineSettings, "namespace")
    step_image: str = _default(EngineSettings, "step_image")  # the node image: it holds the `steps` package
    volume: str = _default(ArgoSettings, "volume")  # "pvc" (volumeClaimTemplates) or "emptyDir" (kwok tests)
    storage_class: str | None = _default(ArgoSettings, "storage_class")
    node_selector: dict[str, str] = field(default_factory=dict)  # every job pod's node placement
    tolerations: tuple[Toleration, ...] = ()
    # where output-publish stores results: "local" (hostPath: the local engine), "pvc" (the shared
    # results claim, one sub-folder per job: Argo), "s3" (a prefix per job in results_bucket) or "ipfs"
    results_target: str = "local"
    results_claim: str = _default(ArgoSettings, "results_claim")
    results_host_dir: str | None = None  # host folder of the local results store (target "local")
    results_bucket: str = _default(S3Settings, "results_bucket")
    s3_endpoint: str | None = None
    s3_region: str | None = None
    ipfs_api: str | None = None
    # Secret holding the S3 keys (s3-access-key, s3-secret-key) for fetch/publish; None: no S3
    storage_secret: str | None = None
    service_account: str = _default(ArgoSettings, "service_account")
    executor_service_account: str = _default(ArgoSettings, "executor_service_account")  # Argo's executor only
    ttl_seconds: int = _default(ArgoSettings, "ttl_seconds")

    @classmethod
    def for_job(cls, settings: Settings, environment: ComputeEnvironment, job_id: str) -> BuildOptions:
        """The options of one job: the configured engine (Argo settings shape the job pods) and the
        environment's results storage."""
        engine, storage = settings.engine, settings.storage
        argo, s3 = engine.argo, storage.s3
        target = settings.result_storage(environment)
        if target == "local":
            target = "pvc" if engine.kind == "argo" else "local"
        return cls(
            namespace=engine.namespace,
            step_image=engine.step_image,
            results_host_dir=str(settings.store_dir / job_id),
            volume=argo.volume if engine.kind == "argo" else "pvc",
            results_target=target,
            results_claim=argo.results_claim,
            results_bucket=s3.results_bucket,
            s3_endpoint=s3.endpoint if s3.configured else None,
            s3_region=s3.region,
            ipfs_api=storage.ipfs.api_url,
            storage_secret=storage.secret_name if s3.configured else None,
            storage_class=argo.storage_class,
            node_selector=dict(argo.node_selector),
            tolerations=tuple(argo.job_tolerations()),
            service_account=argo.service_account,
            executor_service_account=argo.executor_service_account,
            ttl_seconds=argo.ttl_seconds,
        )


@dataclass(frozen=True)
class StepContext:
    """What a step template function may use."""

    job: JobSpec
    environment: ComputeEnvironment
    options: BuildOptions


StepFactory = Callable[[StepContext], Container]


@dataclass(frozen=True)
class StepDefinition:
    name: str
    stage: str
    factory: StepFactory


@dataclass
class StepRegistry:
    """Step templates by name. Not global: each node builds its own from settings."""

    steps: dict[str, StepDefinition] = field(default_factory=dict)

    def add(self, name: str, stage: str, factory: StepFactory) -> None:
        if stage not in STAGES:
            raise WorkflowError(f"step {name!r}: stage must be one of {', '.join(STAGES)}, not {stage!r}")
        if name in self.steps:
            raise WorkflowError(f"step {name!r} is already registered")
        self.steps[name] = StepDefinition(name, stage, factory)

    def get(self, name: str) -> StepDefinition:
        try:
            return self.steps[name]
        except KeyError:
            known = ", ".join(sorted(self.steps)) or "none"
            raise UnknownStepError(f"unknown step template {name!r} (registered: {known})") from None

    def load_modules(self, modules: Iterable[str]) -> None:
        """Import each module and call its ``register(registry)``."""
        for module_name in modules:
            try:
                module = importlib.import_module(module_name)
            except ImportError as exc:
                raise WorkflowError(f"cannot import step module {module_name!r}: {exc}") from exc
            register = getattr(module, "register", None)
            if not callable(register):
                raise WorkflowError(f"step module {module_name!r} has no register(registry) function")
            register(self)
