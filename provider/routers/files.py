"""``fileinfo``: type, size, content type and (on request) checksum of a service's files, never their URLs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter

from c2d.settings import Settings
from c2d.storage.sources import Sources
from provider.assets import probe_file, resolve, service_files
from provider.exceptions import ComputeRequestError, FileUnavailable
from provider.input_files import input_file, node_sources
from provider.models import FileInfo, FileInfoRequest
from provider.services import ServicesDep

router = APIRouter(prefix="/api/services", tags=["files"])


@dataclass(frozen=True)
class _Reader:
    settings: Settings
    sources: Sources
    publisher: str
    results_of: str | None
    checksum: bool


def _info(reader: _Reader, index: int, file: dict[str, Any]) -> FileInfo:
    """``file``: a decrypted file object of the DDO (its URL never leaves this function)."""
    kind = str(file.get("type", "url"))
    try:
        location = input_file(reader.settings, file, reader.publisher, "did", reader.results_of)
        probe = probe_file(reader.sources, location, checksum=reader.checksum)
    except (FileUnavailable, ComputeRequestError):
        return FileInfo(index=index, type=kind, valid=False)
    return FileInfo(
        index=index,
        type=kind,
        valid=True,
        content_type=probe.content_type,
        content_length=probe.content_length,
        checksum=probe.sha256,
    )


@router.post("/fileinfo", summary="Information about a service's files (no URLs)", response_model_exclude_none=True)
def fileinfo(services: ServicesDep, body: FileInfoRequest) -> list[FileInfo]:
    asset = resolve(services.ddos, body.did, "did")
    service = asset.service(body.service_id, "did")
    files = service_files(asset, service, services.account.key.hex(), "did")
    reader = _Reader(
        services.settings,
        node_sources(services.settings),
        asset.owner,
        services.jobs.result_asset_job(asset.did),
        bool(body.checksum),
    )
    return [_info(reader, index, file) for index, file in enumerate(files)]
