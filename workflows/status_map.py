"""Argo step phases -> Ocean job status. Shared by the local engine and the Argo watcher.

Rules (Ocean's legacy engine semantics, plus ocean-node's distinct failure codes):

* configure running → 20; succeeded → 30; failed → 32 when the algorithm could not be fetched
  (exit code 32), else 31 (data provisioning failed).
* algorithm running → 40; failed (non-zero exit, limit hit) → 41; filter running → 50.
* publish running → 60, unless an earlier step failed: the failure code stays while logs upload.
* publish failed → 62; the workflow finished → the failure code if any, else 70.
* a stop request (stopreq 1) or a deadline (stopreq 2) ends as 70, as Ocean's engine does, unless
  provisioning or publishing failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from c2d.status import JobStatus
from steps.contract import EXIT_ALGORITHM_FAILED

RUNNING_PHASES = frozenset({"Pending", "Running"})
FAILED_PHASES = frozenset({"Failed", "Error"})
DONE_PHASES = frozenset({"Succeeded", "Failed", "Error", "Skipped", "Omitted"})


@dataclass(frozen=True)
class StepState:
    """One pipeline step as an engine sees it. ``phase`` uses Argo's node phases; None = not started."""

    name: str
    stage: str
    phase: str | None = None
    exit_code: int | None = None
    message: str | None = None


@dataclass(frozen=True)
class OceanStatus:
    status: JobStatus
    text: str
    finished: bool


_RUNNING_STATUS = {
    "configure": JobStatus.CONFIGURING_VOLUMES,
    "algorithm": JobStatus.RUNNING_ALGORITHM,
    "filter": JobStatus.FILTERING_RESULTS,
    "publish": JobStatus.PUBLISHING_RESULTS,
}


def _failure(step: StepState) -> JobStatus:
    if step.stage == "configure":
        if step.exit_code == EXIT_ALGORITHM_FAILED:
            return JobStatus.ALGORITHM_PROVISIONING_FAILED
        return JobStatus.DATA_PROVISIONING_FAILED
    if step.stage == "publish":
        return JobStatus.RESULTS_UPLOAD_FAILED
    return JobStatus.ALGORITHM_FAILED


def _text(status: JobStatus, reason: str | None) -> str:
    return f"{status.text}: {reason}" if reason else status.text


def ocean_status(steps: Sequence[StepState], *, workflow_done: bool, stopreq: int = 0) -> OceanStatus:
    """The Ocean status of a job whose steps (in pipeline order) are in the given states."""
    failure: tuple[JobStatus, str | None] | None = None
    current: JobStatus = JobStatus.JOB_STARTED
    for step in steps:
        if step.phase is None or step.phase in ("Skipped", "Omitted"):
            continue
        if step.phase in RUNNING_PHASES:
            current = _RUNNING_STATUS.get(step.stage, current)
        elif step.phase in FAILED_PHASES:
            code = _failure(step)
            # A stop or deadline kills the algorithm: that is not the algorithm's failure.
            if not (stopreq and code == JobStatus.ALGORITHM_FAILED):
                failure = failure or (code, step.message)
            if code == JobStatus.RESULTS_UPLOAD_FAILED:
                failure = (code, step.message)
        elif step.phase == "Succeeded":
            # A finished step keeps its status until the next one starts (configure: 30).
            done = JobStatus.PROVISIONING_SUCCESS if step.stage == "configure" else _RUNNING_STATUS.get(step.stage)
            current = done or current
    if failure is not None:
        code, reason = failure
        return OceanStatus(code, _text(code, reason), workflow_done)
    if workflow_done:
        return OceanStatus(JobStatus.JOB_FINISHED, JobStatus.JOB_FINISHED.text, True)
    return OceanStatus(current, current.text, False)
