"""The phase -> Ocean status mapping shared by the local engine and the Argo watcher."""

from __future__ import annotations

import pytest

from workflows.status_map import StepState, ocean_status

STAGES = (
    ("input-fetch", "configure"),
    ("algorithm", "algorithm"),
    ("result-filter", "filter"),
    ("output-publish", "publish"),
)


def _steps(*phases: str | None, exit_codes: tuple[int | None, ...] = ()) -> list[StepState]:
    codes = exit_codes or (None,) * len(phases)
    return [
        StepState(name, stage, phase, code, "why" if phase in ("Failed", "Error") else None)
        for (name, stage), phase, code in zip(STAGES, phases, codes, strict=False)
    ]


@pytest.mark.parametrize(
    ("phases", "done", "stopreq", "expected"),
    [
        ((None, None, None, None), False, 0, (10, "Job started", False)),
        (("Pending",), False, 0, (20, "Configuring volumes", False)),
        (("Running",), False, 0, (20, "Configuring volumes", False)),
        (("Succeeded", None), False, 0, (30, "Provisioning success", False)),
        (("Succeeded", "Running"), False, 0, (40, "Running algorithm ", False)),
        (("Succeeded", "Succeeded", "Running"), False, 0, (50, "Filtering results", False)),
        (("Succeeded", "Succeeded", "Succeeded", "Running"), False, 0, (60, "Publishing results", False)),
        (("Succeeded", "Succeeded", "Succeeded", "Succeeded"), True, 0, (70, "Job finished", True)),
        (("Failed", "Omitted", "Omitted", "Running"), False, 0, (31, "Data provisioning failed: why", False)),
        (("Failed", "Omitted", "Omitted", "Succeeded"), True, 0, (31, "Data provisioning failed: why", True)),
        (("Error", "Omitted", "Omitted", "Succeeded"), True, 0, (31, "Data provisioning failed: why", True)),
        (("Succeeded", "Failed", "Omitted", "Running"), False, 0, (41, "Failed to run algorithm: why", False)),
        (("Succeeded", "Failed", "Omitted", "Succeeded"), True, 1, (70, "Job finished", True)),
        (("Succeeded", "Failed", "Omitted", "Succeeded"), True, 2, (70, "Job finished", True)),
        (("Succeeded", "Succeeded", "Failed", "Succeeded"), True, 0, (41, "Failed to run algorithm: why", True)),
        (
            ("Succeeded", "Succeeded", "Succeeded", "Failed"),
            True,
            0,
            (62, "Failed to upload results to storage: why", True),
        ),
        (("Failed", "Omitted", "Omitted", "Failed"), True, 0, (62, "Failed to upload results to storage: why", True)),
        (
            ("Succeeded", "Succeeded", "Succeeded", "Failed"),
            True,
            1,
            (62, "Failed to upload results to storage: why", True),
        ),
    ],
)
def test_mapping(phases: tuple[str | None, ...], done: bool, stopreq: int, expected: tuple[int, str, bool]) -> None:
    status = ocean_status(_steps(*phases), workflow_done=done, stopreq=stopreq)
    assert (int(status.status), status.text, status.finished) == expected


def test_algorithm_fetch_failure_is_32() -> None:
    steps = _steps("Failed", "Omitted", "Omitted", "Succeeded", exit_codes=(32, None, None, 0))
    status = ocean_status(steps, workflow_done=True)
    assert (int(status.status), status.text) == (32, "Algorithm provisioning failed: why")


def test_replaying_the_same_states_gives_the_same_status() -> None:
    steps = _steps("Succeeded", "Running")
    assert ocean_status(steps, workflow_done=False) == ocean_status(list(steps), workflow_done=False)
