"""``fileinfo``: type, size, content type and (on request) checksum of a service's files, never their URLs."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

import requests
from fastapi import APIRouter, Body

from provider.assets import MAX_CHECKSUM_BYTES, resolve, service_files
from provider.services import ServicesDep

router = APIRouter(prefix="/api/services", tags=["files"])


def _info(session: requests.Session, index: int, file: dict[str, Any], with_checksum: bool) -> dict[str, Any]:
    info: dict[str, Any] = {"index": index, "type": file.get("type", "url"), "valid": False}
    if info["type"] != "url":
        return info
    try:
        with session.request(
            str(file.get("method", "GET")), str(file["url"]), headers=file.get("headers") or {}, stream=True, timeout=30
        ) as response:
            if response.status_code >= 400:
                return info
            info["contentType"] = response.headers.get("Content-Type", "application/octet-stream")
            length = response.headers.get("Content-Length")
            if length and length.isdigit():
                info["contentLength"] = length
            if with_checksum:
                digest, size = hashlib.sha256(), 0
                for chunk in response.iter_content(1024 * 1024):
                    size += len(chunk)
                    if size > MAX_CHECKSUM_BYTES:
                        return info
                    digest.update(chunk)
                info["checksum"] = digest.hexdigest()
                info["contentLength"] = str(size)
    except requests.RequestException:
        return info
    info["valid"] = True
    return info


@router.post("/fileinfo", summary="Information about a service's files (no URLs)")
def fileinfo(services: ServicesDep, body: Annotated[dict[str, Any], Body()]) -> list[dict[str, Any]]:
    asset = resolve(services.ddos, body.get("did"), "did")
    service = asset.service(body.get("serviceId"), "did")
    files = service_files(asset, service, services.account.key.hex(), "did")
    session = requests.Session()
    return [_info(session, index, file, bool(body.get("checksum"))) for index, file in enumerate(files)]
