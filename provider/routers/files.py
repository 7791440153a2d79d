"""``fileinfo``: type, size, content type and (on request) checksum of a service's files, never their URLs."""

from __future__ import annotations

from typing import Annotated, Any

import requests
from fastapi import APIRouter, Body

from provider.assets import probe_file, resolve, service_files
from provider.exceptions import FileUnavailable
from provider.services import ServicesDep

router = APIRouter(prefix="/api/services", tags=["files"])


def _info(session: requests.Session, index: int, file: dict[str, Any], with_checksum: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"index": index, "type": file.get("type", "url"), "valid": False}
    try:
        probe = probe_file(session, file, checksum=with_checksum)
    except FileUnavailable:
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
    session = requests.Session()
    return [_info(session, index, file, bool(body.get("checksum"))) for index, file in enumerate(files)]
