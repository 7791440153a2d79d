"""The local engine refuses Workflow features it cannot honour, before anything runs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from c2d.environments import GpuTerms
from workflows.exceptions import UnsupportedWorkflowError
from workflows.local.interpret import depends_met, interpret, quantity

from .jobs import job_spec, make_environment, render


@pytest.fixture
def workflow(tmp_path: Path) -> dict[str, Any]:
    return render(job_spec("pass", ["https://example.com/a"]), make_environment(), tmp_path)


def test_plan_of_the_default_pipeline(workflow: dict[str, Any]) -> None:
    plan = interpret(workflow)
    assert [(s.task, s.stage, s.egress) for s in plan.steps] == [
        ("input-fetch", "configure", True),
        ("algorithm", "algorithm", False),
        ("output-publish", "publish", True),
    ]
    algo = plan.step("algorithm")
    assert (algo.memory, algo.cpu, algo.deadline, algo.pids, algo.max_files) == (256 * 1024**2, 1.0, 20, 64, 100)
    fetch = plan.step("input-fetch")
    assert fetch.retry is not None and fetch.retry.exit_code == 75 and fetch.retry.limit == 2
    assert fetch.env["C2D_FETCH_SPEC"].startswith('{"datasets"')  # the parameter was substituted
    assert plan.volumes["data"].kind == "job" and plan.volumes["tmp"].kind == "scratch"
    assert [s.gpus for s in plan.steps] == [0, 0, 0]


def test_the_algorithm_alone_asks_for_the_jobs_gpus(tmp_path: Path) -> None:
    env = make_environment().model_copy(update={"gpu": GpuTerms(devices=[0, 1, 2]), "gpus": 2})
    workflow: dict[str, Any] = render(job_spec("pass", ["https://example.com/a"]), env, tmp_path)
    templates: list[dict[str, Any]] = workflow["spec"]["templates"]
    algorithm = next(t for t in templates if t["name"] == "algorithm")
    assert algorithm["container"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert [(s.task, s.gpus) for s in interpret(workflow).steps] == [
        ("input-fetch", 0),
        ("algorithm", 2),
        ("output-publish", 0),
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda w: w["spec"]["templates"][0].pop("container"), "only container templates"),
        (
            lambda w: w["spec"]["templates"][0]["container"]["env"].append({"name": "X", "value": "{{secrets.x}}"}),
            "unknown placeholder",
        ),
        (
            lambda w: w["spec"]["templates"][0]["retryStrategy"].update(expression="lastRetry.status == 'Error'"),
            "retry expression",
        ),
        (
            lambda w: w["spec"]["templates"][-1]["dag"]["tasks"][1].update(depends="input-fetch.Succeeded && !x"),
            "negation",
        ),
        (lambda w: w["spec"]["templates"][-1]["dag"]["tasks"][1].update(depends="ghost"), "unknown task"),
        (lambda w: w["spec"]["templates"][-1]["dag"]["tasks"][0].update(depends="output-publish"), "cycle"),
        (lambda w: w["spec"]["volumes"].append({"name": "cfg", "configMap": {"name": "x"}}), "volume 'cfg'"),
        (
            lambda w: w["spec"]["templates"][1]["container"]["volumeMounts"].append(
                {"name": "nope", "mountPath": "/x"}
            ),
            "unknown volume",
        ),
        (lambda w: w["spec"].update(entrypoint="algorithm"), "must be a DAG"),
        # a condition, a loop or a sidecar would change what runs: refused, never ignored
        (lambda w: w["spec"]["templates"][-1]["dag"]["tasks"][1].update(when="{{workflow.name}} == x"), "'when'"),
        (lambda w: w["spec"]["templates"][-1]["dag"]["tasks"][1].update(withItems=[1, 2]), "'withItems'"),
        (
            lambda w: w["spec"]["templates"][1].update(sidecars=[{"name": "s", "image": "python"}]),
            "'sidecars' is not supported",
        ),
        (lambda w: w["spec"].update(templates="not a list"), "not an Argo Workflow: spec.templates"),
    ],
)
def test_unsupported_features_are_refused(workflow: dict[str, Any], edit: Any, message: str) -> None:
    broken = copy.deepcopy(workflow)
    edit(broken)
    with pytest.raises(UnsupportedWorkflowError, match=message):
        interpret(broken)


def test_depends_expressions() -> None:
    phases = {"a": "Succeeded", "b": "Error", "c": "Omitted"}
    assert depends_met("a", phases) and depends_met("a.Succeeded && b.Errored", phases)
    assert depends_met("x.Succeeded || c.Omitted", phases)
    assert not depends_met("b.Succeeded", phases) and not depends_met("a && b", phases)


def test_quantities() -> None:
    assert quantity("256Mi") == 256 * 1024**2 and quantity("500m") == 0.5 and quantity(2) == 2
    with pytest.raises(UnsupportedWorkflowError):
        quantity("lots")
