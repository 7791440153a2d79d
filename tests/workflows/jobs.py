"""Builders of JobSpecs and Workflows for the workflow tests."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from c2d.db.jobs import NewJob
from c2d.environments import ComputeEnvironment
from workflows.builder import build_workflow
from workflows.registry import BuildOptions
from workflows.spec import (
    AlgorithmContainer,
    AlgorithmInput,
    DatasetInput,
    FetchSpec,
    InputFile,
    JobSpec,
    StoreAccess,
)
from workflows.templates import default_registry

OWNER = "0x" + "ab" * 20


def did(seed: str) -> str:
    return "did:op:" + seed.encode().hex().ljust(64, "0")[:64]


def _loopback_access(urls: list[str]) -> StoreAccess | None:
    """Let the fetch step reach the tests' own loopback servers (the SSRF guard refuses them otherwise)."""
    hosts = sorted({urlsplit(url).netloc for url in urls if urlsplit(url).hostname == "127.0.0.1"})
    return StoreAccess(allow_hosts=hosts) if hosts else None


def job_spec(
    code: str,
    urls: list[str],
    *,
    job_id: str | None = None,
    dataset_did: str | None = None,
    algorithm_files: list[InputFile] | None = None,
    checksum: str | None = None,
    owner: str = OWNER,
) -> JobSpec:
    files = [InputFile(url=url, checksum=checksum) for url in urls]
    algorithm = (
        AlgorithmInput(did=did("algo"), files=algorithm_files, ddo={"id": did("algo")})
        if algorithm_files is not None
        else AlgorithmInput(raw_code=code)
    )
    dataset = dataset_did or did("data")
    return JobSpec(
        job_id=job_id or secrets.token_hex(16),
        owner=owner,
        environment="test",
        fetch=FetchSpec(
            datasets=[DatasetInput(did=dataset, files=files, ddo={"id": dataset, "version": "4.1.0"})],
            algorithm=algorithm,
            max_bytes=64 * 1024**2,
            access=_loopback_access(urls),
        ),
        container=AlgorithmContainer(image="python", tag="3.11-slim", entrypoint="python $ALGO"),
    )


def make_environment(**overrides: object) -> ComputeEnvironment:
    values: dict[str, object] = {
        "id": "test",
        "cpu": 1,
        "ram_gb": 0.25,
        "disk_gb": 0.05,
        "max_job_duration": 20,
        "step_timeout": 30,
        "pids": 64,
        "max_output_files": 100,
    }
    values.update(overrides)
    return ComputeEnvironment.model_validate(values)


def render(spec: JobSpec, env: ComputeEnvironment, store_dir: Path, volume: str = "pvc") -> dict[str, object]:
    options = BuildOptions(results_host_dir=str(store_dir / spec.job_id), volume=volume)
    workflow: dict[str, object] = build_workflow(spec, env, default_registry(), options).to_dict()
    return workflow


def new_job(spec: JobSpec, env: ComputeEnvironment, workflow: dict[str, Any], engine: str) -> NewJob:
    """The job row the provider writes for ``spec`` (raw algorithm, no orders)."""
    return NewJob(
        job_id=spec.job_id,
        owner=spec.owner,
        environment=env.id,
        engine=engine,
        did=spec.input_dids[0],
        input_dids=spec.input_dids,
        algo_did=spec.fetch.algorithm.did or "raw",
        workflow_name=spec.workflow_name,
        workflow=workflow,
    )
