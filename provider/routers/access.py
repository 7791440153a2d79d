"""``initialize`` and ``download``: Ocean's access-service endpoints, as far as compute assets need them.

A compute service's files never leave the node: ``initialize`` sends clients to initializeCompute
(Ocean's own answer), and ``download`` refuses compute services (results come from computeResult).
Access services are not served by this node yet: both endpoints say so instead of failing obscurely.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from provider.assets import resolve
from provider.exceptions import ProviderError
from provider.models import OpenApi
from provider.services import ServicesDep

router = APIRouter(prefix="/api/services", tags=["access"])
# Both always answer an error (400; 404/503 as the others): no successful answer to describe.
NEVER_OK: dict[int | str, OpenApi] = {200: {"description": "never answered"}}


def _refuse(services: ServicesDep, did: str | None, service_id: str | None, compute_message: str) -> None:
    asset = resolve(services.ddos, did, "documentId")
    service = asset.service(service_id, "documentId")
    network = f"Provider {services.settings.chain.chain_id}"
    if service.type == "compute":
        raise ProviderError(f"{network}: {compute_message}")
    raise ProviderError(f"{network}: this node serves compute services only; service {service.id} is {service.type}")


@router.get(
    "/initialize",
    summary="Access-service initialize (compute services: use initializeCompute)",
    response_model=None,
    response_class=Response,
    responses=NEVER_OK,
)
def initialize(
    services: ServicesDep,
    document_id: Annotated[str | None, Query(alias="documentId")] = None,
    service_id: Annotated[str | None, Query(alias="serviceId")] = None,
) -> None:
    _refuse(services, document_id, service_id, "Use the initializeCompute endpoint to initialize compute jobs.")


@router.get(
    "/download",
    summary="Access-service download (compute data never leaves the node)",
    response_model=None,
    response_class=Response,
    responses=NEVER_OK,
)
def download(
    services: ServicesDep,
    document_id: Annotated[str | None, Query(alias="documentId")] = None,
    service_id: Annotated[str | None, Query(alias="serviceId")] = None,
) -> None:
    _refuse(services, document_id, service_id, "compute data never leaves the node; results come from computeResult.")
