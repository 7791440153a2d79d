"""Build a job's Hera ``Workflow``: a DAG of the environment's pipeline over one per-job volume.

Each step depends on the success of the one before; output-publish runs whatever happened before
it (``Succeeded || Failed || Errored || Omitted``) so logs are published for failed jobs too, the
way Ocean's engine publishes after a failed provisioning.

Placement: every job pod goes where the engine's ``node_selector`` and ``tolerations`` say (the Workflow's
own); a step that asks for GPUs (the algorithm of a job with GPUs) goes to the environment's GPU nodes
(:func:`gpu_placement`); the other steps of that job stay on ordinary nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from hera.workflows import DAG, Container, Parameter, Resources, Task, Workflow, models

from c2d.environments import ComputeEnvironment
from c2d.placement import Toleration
from workflows import labels
from workflows.registry import BuildOptions, StepContext, StepRegistry
from workflows.spec import JobSpec
from workflows.templates import NOBODY

PUBLISH = "output-publish"


def _data_volume(
    options: BuildOptions, env: ComputeEnvironment
) -> tuple[list[models.Volume], list[models.PersistentVolumeClaim]]:
    size = f"{max(1, int(env.disk_gb * 1024))}Mi"
    tmp = models.Volume(name="tmp", empty_dir=models.EmptyDirVolumeSource(size_limit=size))
    volumes = [tmp]
    if options.results_target == "local":
        if not options.results_host_dir:
            raise ValueError("results_target 'local' needs results_host_dir")
        volumes.append(
            models.Volume(
                name="results",
                host_path=models.HostPathVolumeSource(path=options.results_host_dir, type="DirectoryOrCreate"),
            )
        )
    elif options.results_target == "pvc":
        claim_source = models.PersistentVolumeClaimVolumeSource(claim_name=options.results_claim)
        volumes.append(models.Volume(name="results", persistent_volume_claim=claim_source))
    if options.volume == "emptyDir":
        volumes.append(models.Volume(name="data", empty_dir=models.EmptyDirVolumeSource(size_limit=size)))
        return volumes, []
    claim = models.PersistentVolumeClaim(
        metadata=models.ObjectMeta(name="data"),
        spec=models.PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"],
            storage_class_name=options.storage_class,
            resources=models.VolumeResourceRequirements(requests={"storage": size}),
        ),
    )
    return volumes, [claim]


def _tolerations(tolerations: Sequence[Toleration]) -> list[models.Toleration] | None:
    return [models.Toleration(**t.model_dump(exclude_none=True)) for t in tolerations] or None


def asks_for_gpus(template: Container) -> bool:
    """Whether the template's container asks for ``nvidia.com/gpu`` (as :func:`workflows.templates.
    sandboxed_resources` does for a job with GPUs)."""
    resources = template.resources
    built = resources.build() if isinstance(resources, Resources) else resources
    if built is None:
        return False
    return any(labels.GPU_RESOURCE in (amounts or {}) for amounts in (built.limits, built.requests))


def gpu_placement(template: Container, ctx: StepContext) -> None:
    """Send the pod of a step that asks for GPUs to the environment's GPU nodes (``gpu.node_selector``,
    ``gpu.tolerations``); a step that asks for none, or sets its own placement, is left as it is.

    Only that pod needs a GPU node: the other steps stay on ordinary nodes and hold no GPU node while they fetch
    or publish. Argo takes a template's ``nodeSelector`` and ``tolerations`` *instead of* the Workflow's (it does
    not merge them), so the template repeats the Workflow's own terms (the node pool, the node-lost
    tolerations) and adds the GPU's; where both name a node label, the GPU's value wins."""
    gpu, options = ctx.environment.gpu, ctx.options
    if gpu is None or template.node_selector or template.tolerations or not asks_for_gpus(template):
        return
    template.node_selector = {**options.node_selector, **gpu.node_selector} or None
    tolerations = list(options.tolerations)
    tolerations += [t for t in gpu.tolerations if t not in tolerations]
    template.tolerations = _tolerations(tolerations)


def _depends(previous: str, task_name: str) -> str:
    if task_name == PUBLISH:
        return " || ".join(f"{previous}.{phase}" for phase in ("Succeeded", "Failed", "Errored", "Omitted"))
    return f"{previous}.Succeeded"


def build_workflow(
    job: JobSpec, environment: ComputeEnvironment, registry: StepRegistry, options: BuildOptions
) -> Workflow:
    """The Workflow object both engines run. Pure: same inputs, same rendering."""
    ctx = StepContext(job=job, environment=environment, options=options)
    templates = []
    for name in environment.pipeline:
        step = registry.get(name)
        template = step.factory(ctx)
        template.name = name
        template.annotations = {**(template.annotations or {}), labels.STAGE: step.stage}
        gpu_placement(template, ctx)
        templates.append(template)
    volumes, claims = _data_volume(options, environment)
    # Room for fetch + publish around the algorithm's own deadline.
    deadline = environment.max_job_duration + 2 * environment.step_timeout + 60
    with (
        Workflow(
            name=job.workflow_name,
            namespace=options.namespace,
            entrypoint="pipeline",
            labels={
                labels.JOB_ID: job.job_id,
                labels.OWNER: job.owner.lower(),
                labels.ENVIRONMENT: environment.id,
            },
            annotations={
                labels.INPUT_DIDS: ",".join(job.input_dids),
                labels.ALGORITHM_DID: job.fetch.algorithm.did or "raw",
            },
            arguments=[Parameter(name=labels.FETCH_SPEC_PARAMETER, value=job.fetch.model_dump_json(exclude_none=True))],
            active_deadline_seconds=deadline,
            automount_service_account_token=False,
            service_account_name=options.service_account,
            executor=models.ExecutorConfig(service_account_name=options.executor_service_account),
            security_context=models.PodSecurityContext(
                run_as_non_root=True,
                run_as_user=NOBODY,
                run_as_group=NOBODY,
                fs_group=NOBODY,
                seccomp_profile=models.SeccompProfile(type="RuntimeDefault"),
            ),
            pod_gc=models.PodGC(strategy="OnWorkflowCompletion"),
            ttl_strategy=models.TTLStrategy(seconds_after_completion=options.ttl_seconds),
            volume_claim_gc=models.VolumeClaimGC(strategy="OnWorkflowCompletion"),
            node_selector=options.node_selector or None,
            tolerations=_tolerations(options.tolerations),
            volumes=volumes,
            volume_claim_templates=claims or None,
            templates=list(templates),
        ) as workflow,
        DAG(name="pipeline"),
    ):
        previous: str | None = None
        for template in templates:
            name = str(template.name)
            Task(
                name=name,
                template=template,
                depends=_depends(previous, name) if previous else None,
            )
            previous = name
    return workflow
