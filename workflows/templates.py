"""The built-in step templates: input-fetch, algorithm, result-filter and output-publish.

Every template mounts the per-job ``data`` volume the way Ocean's pods see it. The algorithm (and
any ``filter`` step) gets inputs read-only, writes only ``outputs``/``logs``, has no network
(label ``egress: denied``), no service-account token, a non-root user and dropped capabilities.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

from hera.workflows import Container, Env, Parameter, Resources, RetryStrategy, SecretEnv, models

from steps import contract
from workflows import labels
from workflows.exceptions import WorkflowError
from workflows.registry import BuildOptions, StepContext, StepRegistry

DATA = "/data"
NOBODY = 65534
# Retry a fetch/publish step only when it reports a transient failure (EX_TEMPFAIL) after its own retries.
TRANSIENT_RETRY = RetryStrategy(
    limit=2,
    retry_policy="Always",
    expression=f"asInt(lastRetry.exitCode) == {contract.EXIT_TEMPFAIL}",
    backoff=models.Backoff(duration="2s", factor=2, max_duration="1m"),
)


def _mount(path: str, sub_path: str | None = None, read_only: bool = False) -> models.VolumeMount:
    return models.VolumeMount(name="data", mount_path=path, sub_path=sub_path, read_only=read_only or None)


def _mebibytes(value: int) -> str:
    return f"{max(1, math.ceil(value / 1024**2))}Mi"


def _security(read_only_root: bool = True) -> models.SecurityContext:
    return models.SecurityContext(
        run_as_non_root=True,
        run_as_user=NOBODY,
        run_as_group=NOBODY,
        allow_privilege_escalation=False,
        read_only_root_filesystem=read_only_root,
        capabilities=models.Capabilities(drop=["ALL"]),
        seccomp_profile=models.SeccompProfile(type="RuntimeDefault"),
    )


def _tmp_volume() -> models.VolumeMount:
    return models.VolumeMount(name="tmp", mount_path="/tmp")


def sandboxed_mounts() -> list[models.VolumeMount]:
    """Mounts of a no-network step: inputs read-only, only outputs and logs writable."""
    return [
        _mount(f"{DATA}/inputs", "inputs", read_only=True),
        _mount(f"{DATA}/ddos", "ddos", read_only=True),
        _mount(f"{DATA}/transformations", "transformations", read_only=True),
        _mount(f"{DATA}/outputs", "outputs"),
        _mount(f"{DATA}/logs", "logs"),
        _tmp_volume(),
    ]


def sandboxed_resources(ctx: StepContext) -> Resources:
    """The algorithm's requests = limits: the (job-sized) environment's cores, memory and disk, and its GPUs as
    ``nvidia.com/gpu`` (whole devices; what the local engine grants too) when it has any."""
    env = ctx.environment
    return Resources(
        cpu_request=env.cpu,
        cpu_limit=env.cpu,
        memory_request=_mebibytes(env.memory_bytes),
        memory_limit=_mebibytes(env.memory_bytes),
        ephemeral_request=_mebibytes(env.disk_bytes),
        ephemeral_limit=_mebibytes(env.disk_bytes),
        gpus=env.gpus or None,
        gpu_flag=labels.GPU_RESOURCE,
    )


def _sandbox_annotations(ctx: StepContext) -> dict[str, str]:
    return {labels.MAX_FILES: str(ctx.environment.max_output_files), labels.PIDS: str(ctx.environment.pids)}


def _step_resources() -> Resources:
    return Resources(cpu_request=0.25, cpu_limit=1, memory_request="128Mi", memory_limit="512Mi")


def _s3_credentials(options: BuildOptions) -> list[Env | SecretEnv]:
    """The S3 keys, read from the node's storage Secret (never written into the Workflow)."""
    if not options.storage_secret:
        return []
    return [
        SecretEnv(name=name, secret_name=options.storage_secret, secret_key=key)
        for name, key in ((contract.S3_ACCESS_KEY_ENV, "s3-access-key"), (contract.S3_SECRET_KEY_ENV, "s3-secret-key"))
    ]


def input_fetch(ctx: StepContext) -> Container:
    return Container(
        name="input-fetch",
        image=ctx.options.step_image,
        command=["python", "-m", "steps.fetch"],
        args=["--data", DATA],
        env=[Env(name=contract.FETCH_SPEC_ENV, value=labels.FETCH_SPEC_REFERENCE), *_s3_credentials(ctx.options)],
        volume_mounts=[_mount(DATA), _tmp_volume()],
        resources=_step_resources(),
        security_context=_security(),
        active_deadline_seconds=ctx.environment.step_timeout,
        retry_strategy=TRANSIENT_RETRY,
        labels={labels.EGRESS: "allowed", labels.ROLE: "step"},
        annotations={labels.STAGE: "configure"},
    )


def algorithm_script(entrypoint: str) -> str:
    """Ocean's algorithm command: the entrypoint with $ALGO replaced, output tee'd to algorithm.log.

    Unlike Ocean's ``... | tee`` the exit status of the algorithm is kept (POSIX sh has no pipefail): the
    shell passes it through a pipe of its own (descriptor 3, closed for the algorithm), never through a file
    the algorithm could fill, remove or replace. The log is opened (descriptor 5) before the algorithm starts,
    and tee writes to that open file: an algorithm that replaces algorithm.log by something else (a FIFO)
    cannot make tee block or write elsewhere.
    """
    command = entrypoint.replace("$ALGO", f"{DATA}/transformations/algorithm")
    return (
        f"exec 4>&1 5>>{DATA}/logs/algorithm.log\n"
        f"code=$({{ {{ {{ {command}\n}} 3>&- 4>&- 5>&-; echo $? >&3; }} 2>&1 "
        "| tee -a /dev/fd/5 >&4 3>&-; } 3>&1)\n"
        'exit "${code:-1}"'
    )


def algorithm(ctx: StepContext) -> Container:
    job = ctx.job
    algo_did = job.fetch.algorithm.did
    env = {
        "DIDS": json.dumps([contract.did_folder(did) for did in job.input_dids]),
        "TRANSFORMATION_DID": contract.did_folder(algo_did) if algo_did else "",
        "VOLUME": DATA,
        "LOGS": f"{DATA}/logs",
        "INPUTS": f"{DATA}/inputs",
        "OUTPUTS": f"{DATA}/outputs",
        "ALGO": f"{DATA}/transformations/algorithm",
        **job.extra_env,
    }
    return Container(
        name="algorithm",
        image=job.container.reference,
        command=["sh", "-c", algorithm_script(job.container.entrypoint)],
        env=[Env(name=name, value=value) for name, value in env.items()],
        working_dir=f"{DATA}/outputs",
        volume_mounts=sandboxed_mounts(),
        resources=sandboxed_resources(ctx),
        security_context=_security(),
        active_deadline_seconds=ctx.environment.max_job_duration,
        automount_service_account_token=False,
        labels={labels.EGRESS: "denied", labels.ROLE: "algorithm"},
        annotations={labels.STAGE: "algorithm", **_sandbox_annotations(ctx)},
    )


def result_filter(ctx: StepContext) -> Container:
    """Example filter step (Ocean status 50): drops outputs the environment's rules refuse."""
    return Container(
        name="result-filter",
        image=ctx.options.step_image,
        command=["python", "-m", "steps.filter"],
        args=["--outputs", f"{DATA}/outputs", "--max-files", str(ctx.environment.max_output_files)],
        volume_mounts=sandboxed_mounts(),
        resources=_step_resources(),
        security_context=_security(),
        active_deadline_seconds=ctx.environment.step_timeout,
        automount_service_account_token=False,
        labels={labels.EGRESS: "denied", labels.ROLE: "step"},
        annotations={labels.STAGE: "filter", **_sandbox_annotations(ctx)},
    )


def _results_target(ctx: StepContext) -> tuple[str, list[models.VolumeMount], list[Env | SecretEnv]]:
    """output-publish's ``--target``, the mounts and the env it needs for the job's results storage."""
    options = ctx.options
    if options.results_target == "local":
        return "/results", [models.VolumeMount(name="results", mount_path="/results")], []
    if options.results_target == "pvc":  # the shared results store; this job's folder only
        return "/results", [models.VolumeMount(name="results", mount_path="/results", sub_path=ctx.job.job_id)], []
    if options.results_target == "s3":
        if not options.s3_endpoint:
            raise WorkflowError("results go to S3 but no S3 endpoint is configured")
        env: list[Env | SecretEnv] = [Env(name=contract.S3_ENDPOINT_ENV, value=options.s3_endpoint)]
        if options.s3_region:
            env.append(Env(name=contract.S3_REGION_ENV, value=options.s3_region))
        return f"s3://{options.results_bucket}/{ctx.job.job_id}", [], [*env, *_s3_credentials(options)]
    if options.results_target == "ipfs":
        if not options.ipfs_api:
            raise WorkflowError("results go to IPFS but no IPFS API is configured")
        return "ipfs", [], [Env(name=contract.IPFS_API_ENV, value=options.ipfs_api)]
    raise WorkflowError(f"unknown results target {options.results_target!r}")


def output_publish(ctx: StepContext) -> Container:
    target, mounts, env = _results_target(ctx)
    return Container(
        name="output-publish",
        image=ctx.options.step_image,
        command=["python", "-m", "steps.publish"],
        args=[
            "--data",
            DATA,
            "--job-id",
            ctx.job.job_id,
            "--target",
            target,
            "--max-files",
            str(ctx.environment.max_output_files),
            "--max-bytes",
            str(ctx.environment.disk_bytes),
        ],
        env=env or None,
        volume_mounts=[_mount(DATA), _tmp_volume(), *mounts],
        resources=_step_resources(),
        security_context=_security(),
        active_deadline_seconds=ctx.environment.step_timeout,
        retry_strategy=TRANSIENT_RETRY,
        outputs=[Parameter(name="results", value_from=models.ValueFrom(path=f"{DATA}/results.json"))],
        labels={labels.EGRESS: "allowed", labels.ROLE: "step"},
        annotations={labels.STAGE: "publish"},
    )


def register(registry: StepRegistry) -> None:
    registry.add("input-fetch", "configure", input_fetch)
    registry.add("algorithm", "algorithm", algorithm)
    registry.add("result-filter", "filter", result_filter)
    registry.add("output-publish", "publish", output_publish)


def default_registry(extra_modules: Iterable[str] = ()) -> StepRegistry:
    """The built-in steps (input-fetch, algorithm, output-publish, result-filter) plus extra modules."""
    registry = StepRegistry()
    register(registry)
    registry.load_modules(extra_modules)
    return registry
