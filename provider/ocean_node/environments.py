"""``GET /computeEnvironments`` in ocean-node's shape: one flat list, resources in the order cpu, ram, disk."""

from __future__ import annotations

import platform

from c2d.db.jobs import JobStore
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

RESOURCE_TYPES = {"cpu": "cpu", "ram": "ram", "disk": "disk"}


def in_use(env: ComputeEnvironment, jobs: JobStore) -> tuple[dict[str, float], int, int]:
    """What the unfinished jobs of ``env`` hold (a job without terms holds the per-job maximum), how many there
    are, and how many of them are free."""
    held: dict[str, float] = {resource.id: 0.0 for resource in env.resource_table()}
    tops: dict[str, float] = {resource.id: resource.max for resource in env.resource_table()}
    running = free = 0
    for terms in jobs.running_terms(env.id):
        running += 1
        free += 1 if terms.get("free") else 0
        amounts = terms.get("resources") or {}
        for name in held:
            held[name] += float(amounts.get(name, tops[name]))
    return held, running, free


def describe(services: Services, env: ComputeEnvironment) -> NodeEnvironmentInfo:
    held, running, free_running = in_use(env, services.jobs)
    table = env.resource_table()
    free = None
    if env.free is not None:
        free = FreeTierInfo(
            max_job_duration=env.free.max_job_duration,
            max_jobs=env.free.max_jobs,
            resources=[
                FreeResource(id=r.id, max=env.free.max_of(r.id), min=min(r.min, env.free.max_of(r.id)), total=r.total)
                for r in table
            ],
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
        running_jobs=running,
        running_free_jobs=free_running,
        fees={str(services.chain.chain_id): [FeeTerms(fee_token=services.fees.token(env), prices=prices)]},
        resources=[
            ResourceInfo(id=r.id, type=RESOURCE_TYPES[r.id], min=r.min, max=r.max, total=r.total, in_use=held[r.id])
            for r in table
        ],
        free=free,
        platform=Platform(architecture=platform.machine(), os="linux"),
    )


def node_environments(services: Services) -> list[NodeEnvironmentInfo]:
    return [describe(services, env) for env in services.settings.environments]
