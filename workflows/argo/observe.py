"""What the watcher's metrics observe when it mirrors a Workflow: the step changes it is about to commit.

A step's change is new when the job's recorded step details (what the watcher committed before, in
``jobs.details.steps``) do not have it yet: each node's start and end is observed once, whatever the number of
events, lists or watcher restarts that show it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from c2d.db.job_records import StepDetail
from workflows.metrics import STEP_FINISHED, STEP_STARTED


@dataclass(frozen=True)
class StepChange:
    """A step started or finished on the cluster at ``at``. For a finish, ``outcome`` is the node's phase and
    ``seconds`` its duration (None when the cluster did not say when it started)."""

    change: str  # STEP_STARTED | STEP_FINISHED
    template: str
    at: datetime
    outcome: str | None = None
    seconds: float | None = None


def cluster_time(value: object) -> datetime | None:
    """An RFC 3339 timestamp of the cluster (``2026-12-01T10:00:00Z``), None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def templates(workflow: dict[str, Any]) -> dict[str, str]:
    """Pipeline task -> the name of its template (the ``step`` label: a bounded set, unlike node names)."""
    spec = workflow.get("spec") or {}
    entry: dict[str, Any] = next(
        (t for t in spec.get("templates") or [] if t.get("name") == spec.get("entrypoint")), {}
    )
    tasks = (entry.get("dag") or {}).get("tasks") or []
    return {str(task["name"]): str(task.get("template") or task["name"]) for task in tasks if "name" in task}


def step_changes(
    previous: Mapping[str, StepDetail], current: Mapping[str, StepDetail], names: dict[str, str]
) -> list[StepChange]:
    """The starts and ends in ``current`` (step details about to be committed, task -> phase, startedAt,
    finishedAt) that ``previous`` (the committed ones) lacks; ``names``: task -> template."""
    changes: list[StepChange] = []
    for task, now in current.items():
        before = previous.get(task) or StepDetail()
        template = names.get(task, task)
        started = cluster_time(now.get("startedAt"))
        if started is not None and not before.get("startedAt"):
            changes.append(StepChange(STEP_STARTED, template, started))
        finished = cluster_time(now.get("finishedAt"))
        if finished is not None and not before.get("finishedAt"):
            seconds = (finished - started).total_seconds() if started is not None else None
            changes.append(StepChange(STEP_FINISHED, template, finished, str(now.get("phase") or ""), seconds))
    return changes
