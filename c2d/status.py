"""Ocean compute job status codes and their texts (legacy operator-service texts, ocean-node extras)."""

from __future__ import annotations

from enum import IntEnum


class JobStatus(IntEnum):
    """Status codes written to ``jobs.status``. Finished jobs also have ``date_finished`` set."""

    WARMING_UP = 1  # waiting for an engine to claim it (ocean-node: "Job queued")
    EXPIRED_IN_QUEUE = 2  # ocean-node code: waited longer than its queueMaxWaitTime; finished, never ran
    JOB_STARTED = 10
    CONFIGURING_VOLUMES = 20
    PROVISIONING_SUCCESS = 30
    DATA_PROVISIONING_FAILED = 31
    ALGORITHM_PROVISIONING_FAILED = 32
    RUNNING_ALGORITHM = 40
    ALGORITHM_FAILED = 41  # ocean-node code: the algorithm exited non-zero or was killed by a limit
    FILTERING_RESULTS = 50
    PUBLISHING_RESULTS = 60
    RESULTS_UPLOAD_FAILED = 62  # ocean-node code: output-publish could not store the results
    JOB_FINISHED = 70

    @property
    def text(self) -> str:
        return STATUS_TEXT[self]

    @property
    def failure(self) -> JobStatus:
        """How a job that ends abnormally at this status fails (a lost node, a deleted Workflow, an error of the
        engine): 41 once its algorithm had started, else 31. The one home of that rule, for every engine."""
        if self >= JobStatus.RUNNING_ALGORITHM:
            return JobStatus.ALGORITHM_FAILED
        return JobStatus.DATA_PROVISIONING_FAILED


# Texts exactly as the legacy operator stack wrote them (note the trailing space of 40).
STATUS_TEXT: dict[JobStatus, str] = {
    JobStatus.WARMING_UP: "Warming up",
    JobStatus.EXPIRED_IN_QUEUE: "Job expired in queue",
    JobStatus.JOB_STARTED: "Job started",
    JobStatus.CONFIGURING_VOLUMES: "Configuring volumes",
    JobStatus.PROVISIONING_SUCCESS: "Provisioning success",
    JobStatus.DATA_PROVISIONING_FAILED: "Data provisioning failed",
    JobStatus.ALGORITHM_PROVISIONING_FAILED: "Algorithm provisioning failed",
    JobStatus.RUNNING_ALGORITHM: "Running algorithm ",
    JobStatus.ALGORITHM_FAILED: "Failed to run algorithm",
    JobStatus.FILTERING_RESULTS: "Filtering results",
    JobStatus.PUBLISHING_RESULTS: "Publishing results",
    JobStatus.RESULTS_UPLOAD_FAILED: "Failed to upload results to storage",
    JobStatus.JOB_FINISHED: "Job finished",
}

JOB_QUEUED_TEXT = "Job queued"  # ocean-node's text of 1


def waiting_text(node_protocol: bool) -> str:
    """The text of status 1: ocean-node's "Job queued" for a job started through its protocol (ocean.js), the
    legacy "Warming up" for a Provider v2.1 job (ocean.py)."""
    return JOB_QUEUED_TEXT if node_protocol else JobStatus.WARMING_UP.text


# Stop-request values of ``jobs.stopreq``.
STOPREQ_NONE = 0
STOPREQ_API = 1
STOPREQ_DEADLINE = 2
