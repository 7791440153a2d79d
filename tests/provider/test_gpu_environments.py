"""Environments with GPUs at the API: what ``computeEnvironments`` says of them (both protocols), and the GPU
requests refused before anything starts. Over the session's real stack (Postgres, chain); the jobs that hold
GPUs are claimed by an engine that does not run (nothing needs a GPU here)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from c2d.chain.deploy import OceanAddresses
from c2d.db.job_records import ComputeTerms, JobDetails
from c2d.db.jobs import JobStore, NewJob
from c2d.db.pool import Pool
from c2d.environments import ComputeEnvironment, FreeTier, GpuTerms, ResourceTerms
from c2d.stack.stack import Stack
from c2d.status import JobStatus
from provider.app import create_app
from tests.occupy import ELSEWHERE, occupied, release

from .ocean_node_requests import ENV, job_count, signed

GPU_ENV = ComputeEnvironment(
    id="gpu-h100",
    description="Jobs with NVIDIA H100 GPUs",
    cpu=4,
    ram_gb=16,
    max_jobs=4,
    gpu=GpuTerms(devices=[0, 1, 2, 3], max_per_job=2, description="NVIDIA H100"),
    gpus=1,  # what a Provider v2.1 job gets (it cannot ask)
    resources={"cpu": ResourceTerms(min=1, price=1.0), "gpu": ResourceTerms(price=3.0)},
    free=FreeTier(max_jobs=1, gpus=1),
)
DID = "did:op:" + "ab" * 32


@pytest.fixture
def client(stack: Stack, pool: Pool) -> Iterator[TestClient]:
    """The app of a node that declares GPU_ENV beside the stack's CPU environment (no engine: nothing runs)."""
    settings = stack.settings.model_copy(update={"environments": [*stack.settings.environments, GPU_ENV]})
    with TestClient(create_app(settings, pool)) as test_client:
        yield test_client


def _node_environment(client: TestClient, env_id: str) -> dict[str, Any]:
    found: dict[str, Any] = next(e for e in client.get("/api/services/computeEnvironments").json() if e["id"] == env_id)
    return found


def _gpus_in_use(client: TestClient) -> float:
    gpu = _node_environment(client, GPU_ENV.id)["resources"][3]
    assert gpu["id"] == "gpu"
    return float(gpu["inUse"])


def _running_node_job(pool: Pool, resources: dict[str, float]) -> str:
    """A job of ocean-node's protocol that was given ``resources``, claimed and running."""
    store, job_id = JobStore(pool), secrets.token_hex(16)
    terms = JobDetails(compute=ComputeTerms(resources=resources, free=False, maxJobDuration=60))
    store.create(NewJob(job_id=job_id, owner="0x" + "dd" * 20, environment=GPU_ENV.id, engine=ELSEWHERE, details=terms))
    store.transition(job_id, JobStatus.RUNNING_ALGORITHM, source="test")
    return job_id


def test_a_gpu_environment_lists_its_gpus_their_price_and_use(
    client: TestClient, pool: Pool, addresses: OceanAddresses
) -> None:
    env = _node_environment(client, GPU_ENV.id)
    assert [r["id"] for r in env["resources"]] == ["cpu", "ram", "disk", "gpu"]
    assert env["resources"][3] == {
        "id": "gpu",
        "type": "gpu",
        "description": "NVIDIA H100",
        "min": 0.0,  # a job gets GPUs only when it asks
        "max": 2.0,  # per job
        "total": 4.0,  # the devices
        "inUse": 0.0,
    }
    assert all("description" not in r for r in env["resources"][:3])  # as ocean-node: GPUs only
    (fee,) = env["fees"]["8996"]
    assert fee["feeToken"] == addresses.ocean
    assert {p["id"]: p["price"] for p in fee["prices"]} == {"cpu": 1.0, "ram": 0.0, "disk": 0.0, "gpu": 3.0}
    assert {r["id"]: r["max"] for r in env["free"]["resources"]}["gpu"] == 1.0
    cpu_env = _node_environment(client, ENV)
    assert [r["id"] for r in cpu_env["resources"]] == ["cpu", "ram", "disk"]  # no GPUs, no gpu resource

    legacy = {
        e["id"]: e for e in client.get("/api/services/computeEnvironments", params={"chainId": 8996}).json()["8996"]
    }
    assert (legacy[GPU_ENV.id]["gpuNumber"], legacy[GPU_ENV.id]["gpuType"]) == (1, "NVIDIA H100")
    assert (legacy[ENV]["gpuNumber"], legacy[ENV]["gpuType"]) == (0, "")


def test_gpus_in_use_are_those_the_running_jobs_hold(client: TestClient, pool: Pool, consumer: LocalAccount) -> None:
    """inUse counts each running job's GPUs: a Provider v2.1 job holds the environment's ``gpus``, a job of
    ocean-node's protocol what it was given; a start that asks for more than is left is refused."""
    assert _gpus_in_use(client) == 0
    with occupied(pool, GPU_ENV.id, 1):  # a v2.1 job: 1 GPU
        asked = _running_node_job(pool, {"cpu": 1, "ram": 1, "disk": 1, "gpu": 2})
        try:
            assert _gpus_in_use(client) == 3
            env = _node_environment(client, GPU_ENV.id)
            assert env["runningJobs"] == 2
            body = _paid_start(consumer, GPU_ENV.id, [{"id": "gpu", "amount": 2}])
            response = client.post("/api/services/compute", json=body)
            assert (response.status_code, response.json()) == (400, "Not enough available gpu")
        finally:
            release(pool, asked)
        assert _gpus_in_use(client) == 1
    assert _gpus_in_use(client) == 0


def _paid_start(consumer: LocalAccount, env_id: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A signed escrow start whose resources are checked before anything else is looked up."""
    return {
        "environment": env_id,
        "maxJobDuration": 60,
        "resources": resources,
        "datasets": [{"documentId": DID, "serviceId": "svc-0", "transferTxId": "0x" + "00" * 32}],
        "algorithm": {"documentId": DID, "serviceId": "svc-0", "transferTxId": "0x" + "00" * 32},
        "payment": {"chainId": 8996, "token": "0x" + "00" * 20},
    } | signed(consumer, "startCompute")


@pytest.mark.parametrize(
    ("env_id", "amount", "message"),
    [
        (GPU_ENV.id, 3, "Not enough gpu resources. Requested 3, but max is 2"),
        (GPU_ENV.id, 0.5, "Invalid amount 0.5 of gpu: GPUs are whole devices"),
        (GPU_ENV.id, -1, "Invalid amount -1.0 of gpu"),
        (ENV, 1, "No such resource gpu"),
    ],
)
def test_bad_gpu_requests_are_refused_before_anything_starts(
    client: TestClient, pool: Pool, consumer: LocalAccount, env_id: str, amount: float, message: str
) -> None:
    """More GPUs than one job may have, part of a GPU, a negative count, GPUs of an environment without: the
    resource errors of ocean-node's start (400, a JSON string), free start ("Error: " first) and
    initializeCompute (500, text)."""
    before = job_count(pool, consumer)
    resources = [{"id": "gpu", "amount": amount}]
    paid = client.post("/api/services/compute", json=_paid_start(consumer, env_id, resources))
    assert (paid.status_code, paid.json()) == (400, message)
    free_body = {
        "environment": env_id,
        "datasets": [{"documentId": DID, "serviceId": "svc-0"}],
        "algorithm": {"documentId": DID, "serviceId": "svc-0"},
        "resources": resources,
    } | signed(consumer, "freeStartCompute")
    free = client.post("/api/services/freeCompute", json=free_body)
    free_message = message.replace("max is 2", "max is 1")  # a free job gets at most the free tier's 1 GPU
    assert (free.status_code, free.json()) == (400, f"Error: {free_message}")
    initialize = {
        "datasets": [{"documentId": DID, "serviceId": "svc-0"}],
        "algorithm": {"documentId": DID, "serviceId": "svc-0"},
        "environment": env_id,
        "consumerAddress": consumer.address,
        "maxJobDuration": 60,
        "payment": {"chainId": 8996, "token": "0x" + "00" * 20, "resources": resources},
    }
    quote = client.post("/api/services/initializeCompute", json=initialize)
    assert (quote.status_code, quote.text) == (500, f"Error: {message}")
    assert job_count(pool, consumer) == before
