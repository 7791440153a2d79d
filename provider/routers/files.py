"""``fileinfo``: type, size, content type and (on request) checksum of a service's files, never their URLs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from c2d.settings import Settings
from c2d.storage.sources import Sources
from provider.assets import probe_file, resolve, service_files
from provider.exceptions import ComputeRequestError, FileUnavailable
from provider.locations import input_file, node_sources
from provider.services import ServicesDep

router = APIRouter(prefix="/api/services", tags=["files"])


def _info(
    settings: Settings, sources: Sources, index: int, file: dict[str, Any], publisher: str, with_checksum: bool
) -> dict[str, Any]:
    info: dict[str, Any] = {"index": index, "type": file.get("type", "url"), "valid": False}
    try:
        probe = probe_file(sources, input_file(settings, file, publisher, "did"), checksum=with_checksum)
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
    settings, sources = services.settings, node_sources(services.settings)
    checksum = bool(body.get("checksum"))
    return [_info(settings, sources, index, file, asset.owner, checksum) for index, file in enumerate(files)]
