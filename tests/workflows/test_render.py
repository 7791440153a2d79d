"""Golden renderings of the job Workflow, validated against Argo's v4.1.2 JSON schema."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hera.workflows import Container

from c2d.environments import ComputeEnvironment, GpuTerms
from c2d.placement import Toleration
from c2d.settings import ArgoSettings
from workflows.builder import build_workflow
from workflows.exceptions import UnknownStepError, WorkflowError
from workflows.local.interpret import interpret
from workflows.registry import BuildOptions, StepContext, StepRegistry
from workflows.spec import InputFile
from workflows.templates import default_registry, sandboxed_resources

from ..conftest import make_settings
from .jobs import job_spec, make_environment

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
JOB_ID = "0123456789abcdef0123456789abcdef"


def _schema() -> dict[str, Any]:
    with gzip.open(HERE / "argo-workflows-v4.1.2.schema.json.gz", "rt", encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    # schema.json declares IntOrString as a string; the CRD accepts integers too (argo_hera.md §1.3).
    schema["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"type": ["integer", "string"]}
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    return cls({**schema, "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.Workflow"})


DEFAULT_PIPELINE = ("input-fetch", "algorithm", "output-publish")
GPU_NODES = GpuTerms(
    devices=[0, 1, 2, 3],
    max_per_job=2,
    description="NVIDIA H100",
    node_selector={"nvidia.com/gpu.present": "true"},
    tolerations=[Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
)
"""An environment's GPU nodes as an operator declares them: NVIDIA's GPU feature discovery label, the taint
that keeps other pods off them."""
JOB_NODES = BuildOptions(
    results_target="pvc", node_selector={"pool": "jobs"}, tolerations=tuple(ArgoSettings().job_tolerations())
)
"""An argo node's placement of every job pod: a node pool, and the node-lost tolerations it always renders."""


def _render(
    pipeline: tuple[str, ...],
    volume: str = "pvc",
    results: str = "local",
    options: BuildOptions | None = None,
    **env: object,
) -> dict[str, Any]:
    spec = job_spec(
        "print('hello')",
        ["https://example.com/data.csv"],
        job_id=JOB_ID,
        checksum="sha256:" + "ab" * 32,
    )
    environment = make_environment(pipeline=pipeline, **env)
    options = options or BuildOptions()
    options = dataclasses.replace(
        options, results_host_dir=f"/var/lib/c2d/store/{JOB_ID}", volume=volume, results_target=results
    )
    rendered: dict[str, Any] = build_workflow(spec, environment, default_registry(), options).to_dict()
    return rendered


def _gpu_job(gpus: int = 2, options: BuildOptions = JOB_NODES) -> dict[str, Any]:
    """A job of a GPU environment that asked for ``gpus`` GPUs (the environment sized to it), on an argo node."""
    return _render(DEFAULT_PIPELINE, "pvc", "pvc", options, gpu=GPU_NODES, gpus=gpus)


def _template(rendered: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in rendered["spec"]["templates"] if t["name"] == name)
    return found


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "default": lambda: _render(DEFAULT_PIPELINE),
    "with-filter": lambda: _render(("input-fetch", "algorithm", "result-filter", "output-publish")),
    # what the argo engine submits to the kwok test cluster: emptyDir data, results on the shared claim
    "kwok-emptydir": lambda: _render(DEFAULT_PIPELINE, "emptyDir", "pvc"),
    # a job that asked for 2 GPUs: the algorithm's pod alone asks for them and goes to the GPU nodes
    "gpu": _gpu_job,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_rendering_validates(case: str, validator: jsonschema.protocols.Validator) -> None:
    rendered = CASES[case]()
    errors = sorted(validator.iter_errors(rendered), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
    text = yaml.safe_dump(rendered, sort_keys=False)
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"missing {golden}; run with UPDATE_GOLDEN=1 to create it"
    assert text == golden.read_text(), f"rendering of {case} changed; review and rerun with UPDATE_GOLDEN=1"


def test_schema_catches_a_broken_workflow(validator: jsonschema.protocols.Validator) -> None:
    broken = copy.deepcopy(CASES["default"]())
    broken["spec"]["activeDeadlineSeconds"] = "soon"
    broken["spec"]["templates"][0]["container"]["volumeMounts"][0]["mountPath"] = 7
    assert len(list(validator.iter_errors(broken))) >= 2


def test_job_pods_go_to_the_configured_nodes(validator: jsonschema.protocols.Validator) -> None:
    """The engine's node_selector and tolerations (a node pool for jobs) reach every pod of the Workflow."""
    spec = job_spec("print(1)", ["https://example.com/a.csv"], job_id=JOB_ID)
    toleration = Toleration(key="pool", operator="Equal", value="jobs", effect="NoSchedule")
    options = BuildOptions(results_target="pvc", node_selector={"pool": "jobs"}, tolerations=(toleration,))
    rendered = build_workflow(spec, make_environment(), default_registry(), options).to_dict()
    assert not list(validator.iter_errors(rendered))
    assert rendered["spec"]["nodeSelector"] == {"pool": "jobs"}
    assert rendered["spec"]["tolerations"] == [
        {"key": "pool", "operator": "Equal", "value": "jobs", "effect": "NoSchedule"}
    ]
    assert "nodeSelector" not in CASES["default"]()["spec"]  # none configured: none rendered


def test_job_pods_leave_a_lost_node_after_the_configured_grace(
    validator: jsonschema.protocols.Validator, tmp_path: Path
) -> None:
    """Kubernetes keeps a pod on an unreachable node for 300 s by default; job pods tolerate the node-lost taints
    for ``node_lost_grace`` only, unless the operator's own tolerations name a taint (theirs is kept)."""
    settings = make_settings(tmp_path)
    settings.engine.argo.node_lost_grace = 45
    own = Toleration(key="node.kubernetes.io/not-ready", operator="Exists", effect="NoExecute", toleration_seconds=600)
    settings.engine.argo.tolerations = [own]
    options = BuildOptions.for_job(settings, make_environment(), JOB_ID)
    spec = job_spec("print(1)", ["https://example.com/a.csv"], job_id=JOB_ID)
    rendered = build_workflow(spec, make_environment(), default_registry(), options).to_dict()
    assert not list(validator.iter_errors(rendered))
    assert rendered["spec"]["tolerations"] == [
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 600},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 45},
    ]


def test_only_the_algorithm_asks_for_gpus_and_goes_to_the_gpu_nodes() -> None:
    """A GPU job: the algorithm's pod asks for its GPUs and is placed on the environment's GPU nodes, keeping the
    Workflow's own placement (Argo takes a template's selector and tolerations instead of the Workflow's); fetch
    and publish ask for no GPU and stay where every job pod goes."""
    rendered = _gpu_job(2)
    spec = rendered["spec"]
    algo = _template(rendered, "algorithm")
    assert algo["container"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert algo["nodeSelector"] == {"pool": "jobs", "nvidia.com/gpu.present": "true"}
    workflow_tolerations = spec["tolerations"]
    gpu_toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert algo["tolerations"] == [*workflow_tolerations, gpu_toleration]
    assert spec["nodeSelector"] == {"pool": "jobs"} and gpu_toleration not in workflow_tolerations
    for name in ("input-fetch", "output-publish"):
        step = _template(rendered, name)
        assert "nodeSelector" not in step and "tolerations" not in step
        assert "nvidia.com/gpu" not in json.dumps(step["container"]["resources"])
    # the local engine runs the same object (results in its host folder): placement is none of its business
    plan = interpret(_render(DEFAULT_PIPELINE, options=JOB_NODES, gpu=GPU_NODES, gpus=2))
    assert [(s.task, s.gpus) for s in plan.steps] == [("input-fetch", 0), ("algorithm", 2), ("output-publish", 0)]


def test_a_gpu_label_wins_over_the_node_pools_and_a_shared_toleration_is_written_once() -> None:
    same = Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")
    options = dataclasses.replace(JOB_NODES, node_selector={"nvidia.com/gpu.present": "false"}, tolerations=(same,))
    algo = _template(_gpu_job(1, options), "algorithm")
    assert algo["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert algo["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    bare = _template(_gpu_job(1, BuildOptions()), "algorithm")  # no node pool: the GPU terms alone
    assert bare["nodeSelector"] == {"nvidia.com/gpu.present": "true"} and len(bare["tolerations"]) == 1


def test_placement_follows_the_gpu_request_of_any_step() -> None:
    """A developer's step that takes the job's limits (``sandboxed_resources``) asks for its GPUs too, and goes to
    the GPU nodes with it; a step that places itself keeps its own terms."""

    def on_gpu(ctx: StepContext) -> Container:
        return Container(name="x", image="i", command=["true"], resources=sandboxed_resources(ctx))

    def pinned(ctx: StepContext) -> Container:
        resources = sandboxed_resources(ctx)
        return Container(name="y", image="i", command=["true"], resources=resources, node_selector={"own": "1"})

    registry = default_registry()
    registry.add("on-gpu", "filter", on_gpu)
    registry.add("pinned", "filter", pinned)
    pipeline = ("input-fetch", "algorithm", "on-gpu", "pinned", "output-publish")
    env = make_environment(pipeline=pipeline, gpu=GPU_NODES, gpus=1)
    spec = job_spec("print(1)", ["https://example.com/a"], job_id=JOB_ID)
    rendered = build_workflow(spec, env, registry, JOB_NODES).to_dict()
    assert _template(rendered, "on-gpu")["nodeSelector"] == _template(rendered, "algorithm")["nodeSelector"]
    assert _template(rendered, "pinned")["nodeSelector"] == {"own": "1"}
    assert "tolerations" not in _template(rendered, "pinned")


def test_a_job_without_gpus_renders_as_on_an_environment_without_them() -> None:
    """A job of a GPU environment that asked for none (gpus 0) goes to no GPU node and asks for no GPU: its Workflow
    is the one of the same environment without GPUs."""
    rendered = _gpu_job(0)
    for template in rendered["spec"]["templates"]:
        assert "nodeSelector" not in template and "tolerations" not in template
    assert "nvidia.com/gpu" not in json.dumps(rendered)
    assert rendered == _render(DEFAULT_PIPELINE, "pvc", "pvc", JOB_NODES)


def test_dag_order_and_publish_runs_after_failures() -> None:
    rendered = CASES["with-filter"]()
    dag = next(t for t in rendered["spec"]["templates"] if t["name"] == "pipeline")["dag"]["tasks"]
    assert [t["name"] for t in dag] == ["input-fetch", "algorithm", "result-filter", "output-publish"]
    assert dag[1]["depends"] == "input-fetch.Succeeded"
    assert dag[2]["depends"] == "algorithm.Succeeded"
    assert dag[3]["depends"] == (
        "result-filter.Succeeded || result-filter.Failed || result-filter.Errored || result-filter.Omitted"
    )


def test_algorithm_is_locked_down_and_never_sees_secrets() -> None:
    rendered = CASES["default"]()
    spec = rendered["spec"]
    algo = next(t for t in spec["templates"] if t["name"] == "algorithm")
    assert algo["metadata"]["labels"]["c2d.oceanprotocol.com/egress"] == "denied"
    assert algo["automountServiceAccountToken"] is False
    ctx = algo["container"]["securityContext"]
    assert ctx["runAsNonRoot"] and ctx["capabilities"]["drop"] == ["ALL"] and not ctx["allowPrivilegeEscalation"]
    mounts = {m["mountPath"]: m for m in algo["container"]["volumeMounts"]}
    assert mounts["/data/inputs"]["readOnly"] and mounts["/data/transformations"]["readOnly"]
    assert "readOnly" not in mounts["/data/outputs"] and "/data" not in mounts
    # The dataset URLs travel only to input-fetch.
    text = json.dumps(algo)
    assert "example.com" not in text and "fetch-spec" not in text
    fetch = next(t for t in spec["templates"] if t["name"] == "input-fetch")
    assert "{{workflow.parameters.fetch-spec}}" in json.dumps(fetch)
    assert spec["automountServiceAccountToken"] is False
    assert algo["container"]["resources"]["limits"]["memory"] == "256Mi"
    assert algo["activeDeadlineSeconds"] == 20


def test_a_developer_step_is_one_function() -> None:
    def watermark(ctx: StepContext) -> Container:
        return Container(name="watermark", image=ctx.options.step_image, command=["python", "-c", "pass"])

    registry = default_registry()
    registry.add("watermark", "filter", watermark)
    env = make_environment(pipeline=("input-fetch", "algorithm", "watermark", "output-publish"))
    spec = job_spec("print(1)", ["https://example.com/a"], job_id=JOB_ID)
    rendered = build_workflow(spec, env, registry, BuildOptions(results_host_dir="/s")).to_dict()
    names = [t["name"] for t in rendered["spec"]["templates"]]
    assert names == ["input-fetch", "algorithm", "watermark", "output-publish", "pipeline"]
    step = rendered["spec"]["templates"][2]
    assert step["metadata"]["annotations"]["c2d.oceanprotocol.com/stage"] == "filter"


def test_registry_errors_are_clear() -> None:
    env = make_environment(pipeline=("input-fetch", "algorithm", "nope", "output-publish"))
    spec = job_spec("print(1)", ["https://example.com/a"], job_id=JOB_ID)
    with pytest.raises(UnknownStepError, match="unknown step template 'nope'"):
        build_workflow(spec, env, default_registry(), BuildOptions(results_host_dir="/s"))
    registry = StepRegistry()
    with pytest.raises(WorkflowError, match="stage must be one of"):
        registry.add("x", "compute", lambda ctx: Container(name="x"))
    with pytest.raises(WorkflowError, match="cannot import step module 'no_such_module'"):
        registry.load_modules(["no_such_module"])
    with pytest.raises(ValueError, match="must contain 'algorithm'"):
        ComputeEnvironment(pipeline=("input-fetch", "output-publish"))


def test_bad_input_files_are_refused() -> None:
    with pytest.raises(ValueError, match="sha256"):
        InputFile(url="https://x", checksum="md5:abc")
