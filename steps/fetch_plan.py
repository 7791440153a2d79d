"""The fetch step's instructions, read without pydantic (a step must start in milliseconds).

The provider builds them with :class:`workflows.spec.FetchSpec` (the schema of record); this reader
checks the same shapes and values, field by field, and refuses anything else with
:class:`SpecError`. ``tests/steps`` round-trips FetchSpec documents through it so the two agree.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from steps.exceptions import SpecError

_DID = re.compile(r"^did:op:[0-9a-f]{64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileToFetch:
    url: str
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    size: int | None = None
    checksum: str | None = None


@dataclass(frozen=True)
class Dataset:
    did: str
    files: list[FileToFetch]
    ddo: dict[str, Any] | None


@dataclass(frozen=True)
class Algorithm:
    did: str | None
    files: list[FileToFetch]
    raw_code: str | None
    ddo: dict[str, Any] | None
    custom_data: dict[str, Any] | None


@dataclass(frozen=True)
class Access:
    s3_endpoint: str | None = None
    s3_region: str | None = None
    ipfs_api: str | None = None
    ipfs_timeout: float = 60.0
    allow_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class FetchPlan:
    datasets: list[Dataset]
    algorithm: Algorithm
    max_bytes: int
    access: Access


class _Reader:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def get(self, obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, required: bool) -> Any:
        if key not in obj or obj[key] is None:
            if required:
                self.problems.append(f"{where}.{key} is missing")
            return None
        value = obj[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            self.problems.append(f"{where}.{key} has the wrong type")
            return None
        return value

    def file(self, raw: object, where: str) -> FileToFetch | None:
        if not isinstance(raw, dict):
            self.problems.append(f"{where} is not an object")
            return None
        url = self.get(raw, "url", str, where, True)
        method = self.get(raw, "method", str, where, False) or "GET"
        headers = self.get(raw, "headers", dict, where, False) or {}
        size = self.get(raw, "size", int, where, False)
        checksum = self.get(raw, "checksum", str, where, False)
        if url is not None and not 0 < len(url) <= 8192:
            self.problems.append(f"{where}.url has a bad length")
        if method not in ("GET", "POST"):
            self.problems.append(f"{where}.method must be GET or POST")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            self.problems.append(f"{where}.headers must map strings to strings")
        if size is not None and size < 0:
            self.problems.append(f"{where}.size is negative")
        if checksum is not None:
            checksum = checksum.lower().removeprefix("sha256:")
            if not _SHA256.match(checksum):
                self.problems.append(f"{where}.checksum is not a sha256 digest")
        return FileToFetch(url or "", method, headers, size, checksum) if url else None

    def files(self, raw: object, where: str, non_empty: bool) -> list[FileToFetch]:
        if not isinstance(raw, list) or (non_empty and not raw):
            self.problems.append(f"{where} must be a{' non-empty' if non_empty else ''} list")
            return []
        return [f for i, item in enumerate(raw) if (f := self.file(item, f"{where}[{i}]")) is not None]

    def did(self, value: object, where: str) -> str | None:
        if value is not None and not (isinstance(value, str) and _DID.match(value)):
            self.problems.append(f"{where} is not a did:op DID")
            return None
        return value


def parse_fetch_spec(raw: str) -> FetchPlan:
    """Read the JSON the provider wrote (``FetchSpec.model_dump_json``); SpecError names what is wrong."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise SpecError("the fetch spec is not JSON") from None
    if not isinstance(doc, dict):
        raise SpecError("the fetch spec is not a JSON object")
    r = _Reader()
    datasets = []
    raw_datasets = doc.get("datasets")
    if not isinstance(raw_datasets, list) or not raw_datasets:
        r.problems.append("datasets must be a non-empty list")
        raw_datasets = []
    for i, item in enumerate(raw_datasets):
        where = f"datasets[{i}]"
        if not isinstance(item, dict):
            r.problems.append(f"{where} is not an object")
            continue
        did = r.did(r.get(item, "did", str, where, True), f"{where}.did")
        files = r.files(item.get("files"), f"{where}.files", non_empty=True)
        datasets.append(Dataset(did or "", files, r.get(item, "ddo", dict, where, False)))
    algo = doc.get("algorithm") if isinstance(doc.get("algorithm"), dict) else None
    if algo is None:
        r.problems.append("algorithm is missing")
        algo = {}
    algorithm = Algorithm(
        did=r.did(algo.get("did"), "algorithm.did"),
        files=r.files(algo.get("files", []), "algorithm.files", non_empty=False),
        raw_code=r.get(algo, "raw_code", str, "algorithm", False),
        ddo=r.get(algo, "ddo", dict, "algorithm", False),
        custom_data=r.get(algo, "custom_data", dict, "algorithm", False),
    )
    max_bytes = r.get(doc, "max_bytes", int, "spec", True)
    if max_bytes is not None and max_bytes < 1:
        r.problems.append("max_bytes must be at least 1")
    access = _access(r, doc.get("access"))
    if r.problems:
        shown = "; ".join(r.problems[:3])
        raise SpecError(f"not a valid fetch spec: {len(r.problems)} error(s): {shown}")
    return FetchPlan(datasets, algorithm, int(max_bytes), access)


def _access(r: _Reader, raw: object) -> Access:
    if raw is None:
        return Access()
    if not isinstance(raw, dict):
        r.problems.append("access is not an object")
        return Access()
    hosts = r.get(raw, "allow_hosts", list, "access", False) or []
    if not all(isinstance(host, str) for host in hosts):
        r.problems.append("access.allow_hosts must be strings")
    timeout = r.get(raw, "ipfs_timeout", (int, float), "access", False)
    return Access(
        s3_endpoint=r.get(raw, "s3_endpoint", str, "access", False),
        s3_region=r.get(raw, "s3_region", str, "access", False),
        ipfs_api=r.get(raw, "ipfs_api", str, "access", False),
        ipfs_timeout=float(timeout) if timeout is not None and timeout > 0 else 60.0,
        allow_hosts=tuple(str(host) for host in hosts),
    )
