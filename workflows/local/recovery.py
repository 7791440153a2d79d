"""Resume or fail a job found half-run when the local engine starts (its previous engine died).

Rules: a job that never got past input-fetch is run again from the start (nothing of the consumer's
ran yet); an algorithm or filter step that was running is *not* run again (an order pays for one
run): it is marked failed "interrupted by an engine restart" and the job goes on to publish its
logs; an interrupted publish is simply run again (it is idempotent). If the job's folder is gone,
the job fails with a status text that says so.
"""

from __future__ import annotations

from c2d.db.job_records import StepDetail
from c2d.db.jobs import JobRecord
from workflows.local.job import JobRun
from workflows.local.jobdisk import JobDisk
from workflows.status_map import DONE_PHASES

INTERRUPTED = "interrupted by an engine restart"


def prepare_resume(run: JobRun, record: JobRecord) -> str | None:
    """Load the job's last step states into ``run``; returns a failure reason if it cannot go on."""
    states: dict[str, StepDetail] = dict(record.details.get("steps") or {})
    started = {task for task, state in states.items() if state.get("phase")}
    first_stage_only = all(run.plan.step(task).stage == "configure" for task in started)
    if not started or first_stage_only:
        run.discard()  # the job starts over, on a new disk
        run.states = {}
        return None
    if all(states.get(step.task, {}).get("phase") in DONE_PHASES for step in run.plan.steps):
        run.states = states  # every step ran (results included): only the final status is missing
        return None
    if not run.job_dir.is_dir() or (run.protections.job_disks and not JobDisk(run.job_dir).image.is_file()):
        return f"the job's data was lost when the engine restarted during step {sorted(started)[-1]!r}"
    for step in run.plan.steps:
        state = states.get(step.task)
        if state is None or state.get("phase") in DONE_PHASES:
            continue
        if step.stage in ("algorithm", "filter"):
            state.update({"phase": "Failed", "message": INTERRUPTED, "reason": "restart"})
        else:
            states.pop(step.task)  # configure/publish steps are safe to run again
    run.states = states
    return None
