"""Where a step's mounts come from on the host: a subPath never leads out of its volume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from c2d.settings import EngineSettings
from workflows.exceptions import SandboxError
from workflows.local.interpret import Plan, Step, interpret
from workflows.local.job import JobRun

from .jobs import job_spec, make_environment, render


def _run(tmp_path: Path) -> JobRun:
    spec = job_spec("print(1)", ["http://127.0.0.1:1/x"], job_id="f" * 32)
    plan = interpret(render(spec, make_environment(), tmp_path / "store"), {})
    return JobRun(
        job_id=spec.job_id,
        plan=plan,
        job_dir=tmp_path / "jobs" / spec.job_id,
        engine=EngineSettings(),
        store_dir=tmp_path / "store",
        hidden=(),
        on_change=lambda states, write: None,
    )


def _with_sub_path(plan: Plan, inside: str, sub_path: str) -> Plan:
    """The plan with the algorithm's mount at ``inside`` taken from ``sub_path`` instead."""
    steps = []
    for step in plan.steps:
        if step.stage == "algorithm":
            mounts = [dataclasses.replace(m, sub_path=sub_path) if m.path == inside else m for m in step.mounts]
            step = dataclasses.replace(step, mounts=mounts)
        steps.append(step)
    return dataclasses.replace(plan, steps=steps)


def _algorithm(run: JobRun) -> Step:
    return next(step for step in run.plan.steps if step.stage == "algorithm")


def test_mounts_map_to_the_job_volume(tmp_path: Path) -> None:
    run = _run(tmp_path)
    outputs = run.host_path(_algorithm(run), "/data/outputs/a/b.txt")
    assert outputs == run.job_dir / "volumes" / "data" / "outputs" / "a" / "b.txt"
    assert (run.job_dir / "volumes" / "data" / "outputs").is_dir()


@pytest.mark.parametrize("sub_path", ["../../..", "outputs/../../x", "/etc"])
def test_a_sub_path_out_of_the_volume_is_refused(tmp_path: Path, sub_path: str) -> None:
    run = _run(tmp_path)
    run.plan = _with_sub_path(run.plan, "/data/outputs", sub_path)
    with pytest.raises(SandboxError, match="leaves its volume"):
        run.host_path(_algorithm(run), "/data/outputs")
    assert not (tmp_path / "x").exists()


def test_a_symlink_left_in_the_volume_is_not_followed(tmp_path: Path) -> None:
    """A step that replaced outputs/ by a symlink to /etc does not get /etc mounted in the next step."""
    run = _run(tmp_path)
    volume = run.job_dir / "volumes" / "data"
    volume.mkdir(parents=True)
    (volume / "outputs").symlink_to("/etc")
    with pytest.raises(SandboxError, match="a symlink"):
        run.host_path(_algorithm(run), "/data/outputs")
    run.plan = _with_sub_path(run.plan, "/data/outputs", "logs/deeper")
    (volume / "logs").symlink_to(tmp_path)
    with pytest.raises(SandboxError, match="a symlink"):
        run.host_path(_algorithm(run), "/data/outputs")
    assert not (tmp_path / "deeper").exists()
