"""Compute environments: the resources, limits, fees and step pipeline a job runs with."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal, get_args

from pydantic import BaseModel, Field, field_validator, model_validator

from c2d.exceptions import ResourceRequestError
from c2d.placement import Toleration

DEFAULT_PIPELINE = ("input-fetch", "algorithm", "output-publish")
ResourceId = Literal["cpu", "ram", "disk", "gpu"]
"""The resources a job asks for, in ocean-node's names and order: cores, GB of memory, GB of disk, whole GPUs."""
RESOURCE_IDS: tuple[ResourceId, ...] = get_args(ResourceId)


class ResourceTerms(BaseModel):
    """What an environment asks of one resource beyond its per-job maximum (``cpu``, ``ram_gb``, ``disk_gb``)."""

    min: float | None = Field(default=None, gt=0, description="Least a job gets (asked or not); default the max.")
    total: float | None = Field(default=None, gt=0, description="All jobs at once; default max x max_jobs.")
    price: float = Field(default=0.0, ge=0, description="Fee tokens per unit per started minute (escrow jobs).")


class FreeTier(BaseModel):
    """Free jobs (ocean-node's ``free`` block, ``POST /freeCompute``): no order, no payment; the trusted
    algorithms of each dataset still apply. Off unless the environment declares it."""

    max_job_duration: int = Field(default=60, ge=1, description="Wall-clock limit of a free job's algorithm, s.")
    max_jobs: int = Field(default=1, ge=1, description="Free jobs of this environment running at once.")
    cpu: float = Field(default=1.0, gt=0, description="Most cores a free job gets.")
    ram_gb: float = Field(default=1.0, gt=0, description="Most memory a free job gets, GiB.")
    disk_gb: float = Field(default=1.0, gt=0, description="Most disk a free job gets, GiB.")
    gpus: int = Field(default=0, ge=0, description="Most GPUs a free job gets (environments with GPUs).")

    def max_of(self, resource: ResourceId) -> float:
        return {"cpu": self.cpu, "ram": self.ram_gb, "disk": self.disk_gb, "gpu": self.gpus}[resource]


class GpuTerms(BaseModel):
    """The GPUs of an environment: whole devices, each held by one running job at a time and given back when
    it ends. The local engine grants host devices ``/dev/nvidia<N>`` by their index N; on Argo, the cluster's
    device plugin picks them (resource ``nvidia.com/gpu``) on nodes that match ``node_selector``."""

    devices: list[int] = Field(
        min_length=1,
        description="Indexes N of the /dev/nvidiaN devices the local engine may grant; on argo, their count is "
        "how many GPUs the environment's jobs may hold at once.",
    )
    max_per_job: int | None = Field(default=None, ge=1, description="Most GPUs one job gets; default all.")
    description: str = Field(default="NVIDIA GPU", max_length=200, description="The model, as clients show it.")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="argo: node labels of the GPU nodes (e.g. nvidia.com/gpu.present=true)."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, description="argo: taints of the GPU nodes that this environment's job pods tolerate."
    )

    @field_validator("devices")
    @classmethod
    def _distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value) or min(value) < 0:
            raise ValueError("devices must be distinct indexes >= 0")
        return value

    @property
    def per_job(self) -> int:
        return self.max_per_job or len(self.devices)


def resources_cost(prices: Mapping[str, float], amounts: Mapping[str, float], seconds: float) -> Decimal:
    """price x amount, summed over the resources, x the minutes started in ``seconds`` (ocean-node's rule)."""
    per_minute = sum(
        (Decimal(str(prices.get(name, 0.0))) * Decimal(str(amount)) for name, amount in amounts.items()), Decimal()
    )
    return per_minute * math.ceil(seconds / 60)


@dataclass(frozen=True)
class Resource:
    """One resource of an environment, as ocean-node declares it: per job ``min``..``max``, ``total`` for all jobs,
    ``price`` per unit per minute in the environment's fee token."""

    id: ResourceId
    min: float
    max: float
    total: float
    price: float


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
    resources: dict[ResourceId, ResourceTerms] = Field(
        default_factory=dict, description="Per resource: min per job, total, price per unit-minute (ocean.js jobs)."
    )
    gpu: GpuTerms | None = Field(default=None, description="The GPUs this environment hands out; none when unset.")
    gpus: int = Field(
        default=0,
        ge=0,
        description="GPUs the algorithm gets: a job of ocean-node's protocol asks for its own number (resource "
        "gpu, at least resources.gpu.min), any other job gets this many.",
    )
    min_job_duration: int = Field(default=60, ge=0, description="Escrow jobs pay for at least this long, seconds.")
    free: FreeTier | None = Field(default=None, description="Free jobs (POST /freeCompute); none when unset.")
    queue_reserve_after: int = Field(
        default=600,
        ge=0,
        description="A job queued this long (s) reserves its resources: later jobs no longer pass it.",
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

    @model_validator(mode="after")
    def _resource_bounds(self) -> ComputeEnvironment:
        per_job = self.gpu.per_job if self.gpu else 0
        if self.gpus > per_job:
            raise ValueError(f"gpus ({self.gpus}) is above the GPUs one job may get ({per_job})")
        if self.gpu and self.gpu.per_job > len(self.gpu.devices):
            raise ValueError(f"gpu.max_per_job is above the {len(self.gpu.devices)} declared devices")
        if "gpu" in self.resources and self.gpu is None:
            raise ValueError("resources.gpu needs gpu (the devices)")
        for resource in self.resource_table():
            if resource.min > resource.max:
                raise ValueError(f"resources.{resource.id}.min is above the per-job maximum {resource.max}")
            if resource.total < resource.max:
                raise ValueError(f"resources.{resource.id}.total is below the per-job maximum {resource.max}")
        return self

    def per_job(self, resource: ResourceId) -> float:
        """How much of ``resource`` a job gets that does not ask (a Provider v2.1 job): the environment's own
        ``cpu``, ``ram_gb``, ``disk_gb``, ``gpus``; for a sized copy (:meth:`sized`), the job's amounts."""
        return {"cpu": self.cpu, "ram": self.ram_gb, "disk": self.disk_gb, "gpu": float(self.gpus)}[resource]

    def resource_table(self) -> list[Resource]:
        """cpu, ram, disk, then gpu when the environment has GPUs (in that order, which clients index): per-job
        bounds, totals and prices. A GPU's minimum is 0 unless set (a job gets GPUs only when it asks); its
        total is the number of devices."""
        table = []
        for resource in RESOURCE_IDS:
            terms = self.resources.get(resource) or ResourceTerms()
            if resource == "gpu":
                if self.gpu is None:
                    continue
                top, total = float(self.gpu.per_job), float(len(self.gpu.devices))
                table.append(Resource(resource, terms.min or 0.0, top, total, terms.price))
                continue
            top = self.per_job(resource)
            low = top if terms.min is None else terms.min
            table.append(Resource(resource, low, top, terms.total or top * self.max_jobs, terms.price))
        return table

    def sized(self, amounts: Mapping[str, float], max_job_duration: int) -> ComputeEnvironment:
        """This environment cut to one job's resources and duration: what the engines enforce (cgroup limits, disk
        cap, deadline, Argo requests/limits) for a job that asked for them (amounts from :meth:`job_resources`)."""
        update = {"cpu": amounts["cpu"], "ram_gb": amounts["ram"], "disk_gb": amounts["disk"]}
        update["gpus"] = int(amounts.get("gpu", 0))
        return self.model_copy(update={**update, "max_job_duration": max_job_duration})

    def bounds(self, resource: Resource, *, free: bool = False) -> tuple[float, float]:
        """The least and the most of ``resource`` one job gets; for a free job the free tier's maximum, the minimum
        never above it."""
        top = self.free.max_of(resource.id) if free and self.free else resource.max
        return min(resource.min, top), top

    def job_resources(self, asked: Mapping[str, float], *, free: bool = False) -> dict[str, float]:
        """The amounts a job gets, as ocean-node fills them: what it asked for, raised to each resource's minimum
        (the minimum when not asked). Raises :class:`ResourceRequestError` for an unknown resource, a negative
        amount, more than one job may have, or free resources where the environment offers no free jobs."""
        if free and self.free is None:
            raise ResourceRequestError("This env does not support free jobs")
        offered = {resource.id for resource in self.resource_table()}
        for name, amount in asked.items():
            if name not in offered:
                raise ResourceRequestError(f"No such resource {name}")
            if not math.isfinite(amount) or amount < 0:
                raise ResourceRequestError(f"Invalid amount {amount} of {name}")
            if name == "gpu" and amount != int(amount):
                raise ResourceRequestError(f"Invalid amount {amount} of gpu: GPUs are whole devices")
        amounts: dict[str, float] = {}
        for resource in self.resource_table():
            low, top = self.bounds(resource, free=free)
            wanted = asked.get(resource.id)
            wanted = low if wanted is None or wanted < low else wanted
            if wanted > top:
                raise ResourceRequestError(
                    f"Not enough {resource.id} resources. Requested {wanted:g}, but max is {top:g}"
                )
            amounts[resource.id] = wanted
        return amounts

    @property
    def prices(self) -> dict[str, float]:
        """Fee tokens per unit per started minute, by resource."""
        return {resource.id: resource.price for resource in self.resource_table()}

    def cost(self, amounts: Mapping[str, float], seconds: float) -> Decimal:
        """Fee tokens a job owes: price x amount x started minutes, for at least ``min_job_duration``."""
        return resources_cost(self.prices, amounts, max(seconds, self.min_job_duration))

    @property
    def memory_bytes(self) -> int:
        return int(self.ram_gb * 1024**3)

    @property
    def disk_bytes(self) -> int:
        return int(self.disk_gb * 1024**3)


def default_environments() -> list[ComputeEnvironment]:
    return [ComputeEnvironment()]
