"""Compute environments: the resources, limits, fees and step pipeline a job runs with."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

DEFAULT_PIPELINE = ("input-fetch", "algorithm", "output-publish")


class ComputeEnvironment(BaseModel):
    """One compute environment offered by this node (served by ``computeEnvironments``)."""

    id: str = Field(default="local-cpu", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = "Sandboxed CPU jobs on this machine"
    cpu: float = Field(default=1.0, gt=0, le=256, description="CPU cores for the algorithm.")
    ram_gb: float = Field(default=1.0, gt=0, description="Memory limit of the algorithm, GiB.")
    disk_gb: float = Field(default=1.0, gt=0, description="Cap on inputs, outputs and logs of one job, GiB.")
    max_job_duration: int = Field(default=600, ge=1, description="Wall-clock limit of the algorithm, seconds.")
    step_timeout: int = Field(default=600, ge=1, description="Wall-clock limit of each fetch/publish step, s.")
    max_jobs: int = Field(default=4, ge=1, description="Jobs of this environment running at once.")
    pids: int = Field(default=256, ge=8, description="Processes/threads the algorithm may have at once.")
    max_output_files: int = Field(default=10_000, ge=1, description="Files the algorithm may write.")
    storage_expiry: int = Field(default=7 * 86400, ge=60, description="Results are kept this long, seconds.")
    price_min: float = Field(default=0.0, ge=0, description="Provider fee per minute, in fee tokens.")
    fee_token: str | None = Field(default=None, description="Fee token address; default the Ocean token.")
    consumer_address: str | None = Field(default=None, description="Address that orders inputs for jobs.")
    storage: Literal["local", "s3", "ipfs"] | None = Field(
        default=None, description="Where this environment's results go; default the node's storage backend."
    )
    pipeline: tuple[str, ...] = Field(
        default=DEFAULT_PIPELINE, description="Step templates in order, from the workflows step registry."
    )

    @field_validator("pipeline")
    @classmethod
    def _pipeline_shape(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("pipeline names a step twice")
        for required in ("input-fetch", "algorithm", "output-publish"):
            if required not in value:
                raise ValueError(f"pipeline must contain {required!r}")
        if value[0] != "input-fetch" or value[-1] != "output-publish":
            raise ValueError("pipeline must start with 'input-fetch' and end with 'output-publish'")
        return value

    @property
    def memory_bytes(self) -> int:
        return int(self.ram_gb * 1024**3)

    @property
    def disk_bytes(self) -> int:
        return int(self.disk_gb * 1024**3)


def default_environments() -> list[ComputeEnvironment]:
    return [ComputeEnvironment()]
