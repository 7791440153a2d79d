"""``GET /computeEnvironments`` in ocean-node's shape: one flat list, resources in the order cpu, ram, disk, then
gpu (with its model as ``description``) where the environment has GPUs; the running and queued jobs and what they
hold by :mod:`c2d.db.capacity`'s rules (what the engines claim by)."""

from __future__ import annotations

import platform

from c2d.db.job_queue import JobQueue
from c2d.environments import ComputeEnvironment, Resource
from provider.models import (
    FeeTerms,
    FreeResource,
    FreeTierInfo,
    GpuResourceInfo,
    NodeEnvironmentInfo,
    Platform,
    ResourceInfo,
    ResourcePrice,
)
from provider.services import Services

RESOURCE_TYPES = {"cpu": "cpu", "ram": "ram", "disk": "disk", "gpu": "gpu"}


def _resource(env: ComputeEnvironment, resource: Resource, in_use: float) -> ResourceInfo:
    terms = {"min": resource.min, "max": resource.max, "total": resource.total, "in_use": in_use}
    if resource.id == "gpu" and env.gpu is not None:
        return GpuResourceInfo(id="gpu", type="gpu", description=env.gpu.description, **terms)
    return ResourceInfo(id=resource.id, type=RESOURCE_TYPES[resource.id], **terms)


def describe(services: Services, env: ComputeEnvironment) -> NodeEnvironmentInfo:
    used = JobQueue(services.jobs.pool).usage(env)
    table = env.resource_table()
    free = None
    if env.free is not None:
        free_bounds = [(r, env.bounds(r, free=True)) for r in table]
        free = FreeTierInfo(
            max_job_duration=env.free.max_job_duration,
            max_jobs=env.free.max_jobs,
            resources=[FreeResource(id=r.id, min=low, max=top, total=r.total) for r, (low, top) in free_bounds],
            storage_expiry=env.storage_expiry,
        )
    prices = [ResourcePrice(id=r.id, price=r.price) for r in table]
    return NodeEnvironmentInfo(
        id=env.id,
        description=env.description,
        consumer_address=services.payee(env),
        storage_expiry=env.storage_expiry,
        min_job_duration=env.min_job_duration,
        max_job_duration=env.max_job_duration,
        max_jobs=env.max_jobs,
        running_jobs=used.running,
        running_free_jobs=used.running_free,
        queued_jobs=used.queued,
        queued_free_jobs=used.queued_free,
        fees={str(services.chain.chain_id): [FeeTerms(fee_token=services.fees.token(env), prices=prices)]},
        resources=[_resource(env, r, used.in_use[r.id]) for r in table],
        free=free,
        platform=Platform(architecture=platform.machine(), os="linux"),
    )


def node_environments(services: Services) -> list[NodeEnvironmentInfo]:
    return [describe(services, env) for env in services.settings.environments]
