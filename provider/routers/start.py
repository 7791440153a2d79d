"""``initializeCompute`` and ``compute`` POST: the paid part of the compute API."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from provider.initialize import initialize_compute
from provider.services import ServicesDep
from provider.start import start_compute

router = APIRouter(prefix="/api/services", tags=["compute"])


@router.post("/initializeCompute", summary="Provider fees (or still-valid orders) for a compute job")
def initialize(services: ServicesDep, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    return initialize_compute(services, body)


@router.post("/compute", summary="Start a compute job on paid orders")
def start(services: ServicesDep, body: Annotated[dict[str, Any], Body()]) -> list[dict[str, Any]]:
    return start_compute(services, body)
