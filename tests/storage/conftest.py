"""Storage tests: the step programs and the node against real MinIO and Kubo servers."""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from c2d.storage.ipfs import Kubo
from c2d.storage.locations import parse_s3
from c2d.storage.s3 import S3Config, S3Store
from tests.storage_servers import CuttingProxy, KuboServer, MinioServer, cutting_proxy, kubo_server, minio_server
from workflows.spec import AlgorithmInput, DatasetInput, FetchSpec, InputFile, StoreAccess

__all__ = ["CuttingProxy", "KuboServer", "MinioServer", "cutting_proxy", "kubo_server", "minio_server"]
DID = "did:op:" + "ef" * 32
INPUT = Path("inputs") / DID.removeprefix("did:op:") / "0"


def s3_env(server: MinioServer, *, secret_key: str | None = None, endpoint: str | None = None) -> dict[str, str]:
    """What the steps get from the storage Secret (keys) and the Workflow (endpoint)."""
    return {
        "C2D_S3_ENDPOINT": endpoint or server.endpoint,
        "C2D_S3_ACCESS_KEY": server.access_key,
        "C2D_S3_SECRET_KEY": secret_key or server.secret_key,
    }


@pytest.fixture
def s3(minio_server: MinioServer) -> S3Store:
    return S3Store(S3Config(minio_server.endpoint, minio_server.access_key, minio_server.secret_key))


@pytest.fixture
def bucket(s3: S3Store) -> str:
    name = f"t-{secrets.token_hex(6)}"
    s3.ensure_bucket(name)
    return name


@pytest.fixture
def kubo(kubo_server: KuboServer) -> Kubo:
    return Kubo(kubo_server.api_url, timeout=5)


def put_object(s3: S3Store, url: str, body: bytes, tmp_path: Path) -> None:
    """Store ``body`` at ``url`` (s3://bucket/key) in the test MinIO."""
    s3.upload(parse_s3(url), io.BytesIO(body), len(body))


def fetch_spec(url: str, max_bytes: int = 1 << 20, **access: str) -> FetchSpec:
    return FetchSpec(
        datasets=[DatasetInput(did=DID, files=[InputFile(url=url)])],
        algorithm=AlgorithmInput(raw_code="pass"),
        max_bytes=max_bytes,
        access=StoreAccess(**access),
    )


def run_fetch(data: Path, spec: FetchSpec, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {}), "C2D_FETCH_SPEC": spec.model_dump_json()}
    cmd = [sys.executable, "-m", "steps.fetch", "--data", str(data)]
    return subprocess.run(cmd, env=full, capture_output=True, text=True, timeout=120)


def run_publish(data: Path, target: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "steps.publish", "--data", str(data), "--job-id", "j", "--target", target]
    return subprocess.run(cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120)


def outputs(data: Path, files: dict[str, bytes]) -> None:
    for name, body in files.items():
        path = data / "outputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    (data / "logs").mkdir(parents=True, exist_ok=True)
    (data / "logs" / "algorithm.log").write_text("algorithm ran\n")


def listed(data: Path) -> list[dict[str, object]]:
    value: list[dict[str, object]] = json.loads((data / "results.json").read_text())
    return value
