"""What a job needs, independent of any engine: inputs, algorithm and where results go.

The provider builds a :class:`JobSpec` from a validated compute request; :mod:`workflows.builder`
turns it into a Hera ``Workflow``. The :class:`FetchSpec` part travels to the input-fetch step as a
workflow parameter (it holds the decrypted file URLs, so it never reaches the algorithm's step).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, field_validator

DID_PATTERN = r"^did:op:[0-9a-f]{64}$"
JOB_ID_PATTERN = r"^[0-9a-f]{32}$"


class InputFile(BaseModel):
    """One file to fetch: an ``http(s)://``, ``s3://<bucket>/<key>`` or ``ipfs://<cid>`` URL.
    ``checksum`` is ``sha256:<hex>`` (or bare hex) when the publisher gave one."""

    url: str = Field(min_length=1, max_length=8192)
    method: str = Field(default="GET", pattern=r"^(GET|POST)$")
    headers: dict[str, str] = Field(default_factory=dict)
    size: int | None = Field(default=None, ge=0)
    checksum: str | None = None

    @field_validator("checksum")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digest = value.lower().removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError("checksum must be a sha256 hex digest (optionally prefixed 'sha256:')")
        return digest


class DatasetInput(BaseModel):
    did: str = Field(pattern=DID_PATTERN)
    files: list[InputFile] = Field(min_length=1)
    ddo: dict[str, Any] | None = None


class AlgorithmInput(BaseModel):
    """The algorithm: files from URLs, or raw code. ``did`` is None for raw algorithms."""

    did: str | None = Field(default=None, pattern=DID_PATTERN)
    files: list[InputFile] = Field(default_factory=list)
    raw_code: str | None = None
    ddo: dict[str, Any] | None = None
    custom_data: dict[str, Any] | None = None


class StoreAccess(BaseModel):
    """How input-fetch reaches the stores: operator endpoints (never secrets: S3 keys come from the
    environment variables ``C2D_S3_ACCESS_KEY``/``C2D_S3_SECRET_KEY``) and the non-public hosts it may fetch."""

    s3_endpoint: str | None = None
    s3_region: str | None = None
    ipfs_api: str | None = None
    ipfs_timeout: float = Field(default=60.0, gt=0)
    allow_hosts: list[str] = Field(default_factory=list, description="SSRF allow-list (C2D_FETCH__ALLOW_HOSTS).")


class FetchSpec(BaseModel):
    """Instructions for the input-fetch step."""

    datasets: list[DatasetInput] = Field(min_length=1)
    algorithm: AlgorithmInput
    max_bytes: int = Field(ge=1, description="Total bytes all inputs may take.")
    access: StoreAccess | None = Field(default=None, description="None: public http(s) URLs only.")


class AlgorithmContainer(BaseModel):
    """The algorithm's container section (DDO ``metadata.algorithm.container``)."""

    image: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")
    tag: str = Field(default="latest", max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
    entrypoint: str = Field(min_length=1, max_length=4096)
    checksum: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")

    @property
    def reference(self) -> str:
        return f"{self.image}@{self.checksum}" if self.checksum else f"{self.image}:{self.tag}"


class JobSpec(BaseModel):
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    owner: str = Field(pattern=r"^0x[0-9a-fA-F]{40}$")
    environment: str
    fetch: FetchSpec
    container: AlgorithmContainer
    extra_env: dict[str, str] = Field(default_factory=dict, description="Extra env for the algorithm.")

    @property
    def input_dids(self) -> list[str]:
        return [dataset.did for dataset in self.fetch.datasets]

    @property
    def workflow_name(self) -> str:
        return f"c2d-{self.job_id}"
