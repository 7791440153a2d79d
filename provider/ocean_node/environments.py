"""``GET /computeEnvironments`` in ocean-node's shape: one flat list, resources in the order cpu, ram, disk; the
running and queued jobs and what they hold by :mod:`c2d.db.capacity`'s rules (what the engines claim by)."""

from __future__ import annotations

import platform

from c2d.db.job_queue import JobQueue
from c2d.environments import ComputeEnvironment
from provider.models import (
    FeeTerms,
    FreeResource,
    FreeTierInfo,
    NodeEnvironmentInfo,
    Platform,
    ResourceInfo,
    ResourcePrice,
)
from provider.services import Services

RESOURCE_TYPES = {"cpu": "cpu", "ram": "ram", "disk": "disk", "gpu": "gpu"}


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
        resources=[
            ResourceInfo(
                id=r.id, type=RESOURCE_TYPES[r.id], min=r.min, max=r.max, total=r.total, in_use=used.in_use[r.id]
            )
            for r in table
        ],
        free=free,
        platform=Platform(architecture=platform.machine(), os="linux"),
    )


def node_environments(services: Services) -> list[NodeEnvironmentInfo]:
    return [describe(services, env) for env in services.settings.environments]
