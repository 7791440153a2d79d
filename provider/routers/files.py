"""``fileinfo``: type, size, content type and (on request) checksum of a service's files, never their URLs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Body

from c2d.settings import Settings
from c2d.storage.sources import Sources
from provider.assets import probe_file, resolve, service_files
from provider.exceptions import ComputeRequestError, FileUnavailable
from provider.locations import input_file, node_sources
from provider.services import ServicesDep

router = APIRouter(prefix="/api/services", tags=["files"])


@dataclass(frozen=True)
class _Reader:
    settings: Settings
    sources: Sources
    publisher: str
    results_of: str | None
    checksum: bool


def _info(reader: _Reader, index: int, file: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {"index": index, "type": file.get("type", "url"), "valid": False}
    try:
        location = input_file(reader.settings, file, reader.publisher, "did", reader.results_of)
        probe = probe_file(reader.sources, location, checksum=reader.checksum)
    except (FileUnavailable, ComputeRequestError):
        return info
    info.update(valid=True, contentType=probe.content_type)
    if probe.content_length is not None:
        info["contentLength"] = probe.content_length
    if probe.sha256 is not None:
        info["checksum"] = probe.sha256
    return info


@router.post("/fileinfo", summary="Information about a service's files (no URLs)")
def fileinfo(services: ServicesDep, body: Annotated[dict[str, Any], Body()]) -> list[dict[str, Any]]:
    asset = resolve(services.ddos, body.get("did"), "did")
    service = asset.service(body.get("serviceId"), "did")
    files = service_files(asset, service, services.account.key.hex(), "did")
    reader = _Reader(
        services.settings,
        node_sources(services.settings),
        asset.owner,
        services.jobs.result_asset_job(asset.did),
        bool(body.get("checksum")),
    )
    return [_info(reader, index, file) for index, file in enumerate(files)]
