"""``GET /``: who we are and where every endpoint lives (ocean.py discovers URLs from this map)."""

from __future__ import annotations

from fastapi import APIRouter

from provider.models import ProviderInfo
from provider.services import ServicesDep

router = APIRouter(tags=["root"])
SERVICES = "/api/services"

# Ocean provider endpoint names -> (method, path), as Flask exposed them in provider v2.1.
SERVICE_ENDPOINTS = {
    "computeStart": ("POST", f"{SERVICES}/compute"),
    "computeStatus": ("GET", f"{SERVICES}/compute"),
    "computeStop": ("PUT", f"{SERVICES}/compute"),
    "computeDelete": ("DELETE", f"{SERVICES}/compute"),
    "computeResult": ("GET", f"{SERVICES}/computeResult"),
    "computeStreamableLogs": ("GET", f"{SERVICES}/computeStreamableLogs"),  # ocean-node's, for ocean.js
    "computeEnvironments": ("GET", f"{SERVICES}/computeEnvironments"),
    "initializeCompute": ("POST", f"{SERVICES}/initializeCompute"),
    "nonce": ("GET", f"{SERVICES}/nonce"),
    "fileinfo": ("POST", f"{SERVICES}/fileinfo"),
    "initialize": ("GET", f"{SERVICES}/initialize"),
    "download": ("GET", f"{SERVICES}/download"),
    "encrypt": ("POST", f"{SERVICES}/encrypt"),
    "decrypt": ("POST", f"{SERVICES}/decrypt"),
}


@router.get("/", summary="Provider information and endpoint map")
def root(services: ServicesDep) -> ProviderInfo:
    chain_id = services.settings.chain.chain_id
    return ProviderInfo(
        software="Provider",
        version="2.1.6",
        implementation="c2d-node",
        provider_addresses={str(chain_id): services.address},
        chain_ids=[chain_id],
        service_endpoints=SERVICE_ENDPOINTS,
    )
