"""``initializeCompute`` and ``compute`` POST: the paid part of the compute API."""

from __future__ import annotations

from fastapi import APIRouter

from provider.initialize import initialize_compute
from provider.models import ComputeStartRequest, ComputeStatus, InitializeComputeRequest, InitializeComputeResponse
from provider.services import ServicesDep
from provider.start_job import start_compute

router = APIRouter(prefix="/api/services", tags=["compute"])


@router.post(
    "/initializeCompute",
    summary="Provider fees (or still-valid orders) for a compute job",
    response_model_exclude_none=True,
)
def initialize(services: ServicesDep, body: InitializeComputeRequest) -> InitializeComputeResponse:
    return initialize_compute(services, body)


@router.post("/compute", summary="Start a compute job on paid orders", response_model_exclude_unset=True)
def start(services: ServicesDep, body: ComputeStartRequest) -> list[ComputeStatus]:
    return start_compute(services, body)
