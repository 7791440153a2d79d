"""``GET /``: who we are and where every endpoint lives (ocean.py and ocean.js discover URLs from this map;
ocean.js looks names up case-insensitively)."""

from __future__ import annotations

from fastapi import APIRouter

from provider.models import ProviderInfo
from provider.services import ServicesDep

router = APIRouter(tags=["root"])
SERVICES = "/api/services"

# endpoint names -> (method, path): Provider v2.1's names, then the ones ocean-node added (ocean.js 8.x).
SERVICE_ENDPOINTS = {
    "computeStart": ("POST", f"{SERVICES}/compute"),
    "computeStatus": ("GET", f"{SERVICES}/compute"),
    "computeStop": ("PUT", f"{SERVICES}/compute"),
    "computeDelete": ("DELETE", f"{SERVICES}/compute"),
    "computeResult": ("GET", f"{SERVICES}/computeResult"),
    "computeEnvironments": ("GET", f"{SERVICES}/computeEnvironments"),
    "initializeCompute": ("POST", f"{SERVICES}/initializeCompute"),
    "nonce": ("GET", f"{SERVICES}/nonce"),
    "fileinfo": ("POST", f"{SERVICES}/fileinfo"),
    "initialize": ("GET", f"{SERVICES}/initialize"),
    "download": ("GET", f"{SERVICES}/download"),
    "encrypt": ("POST", f"{SERVICES}/encrypt"),
    "decrypt": ("POST", f"{SERVICES}/decrypt"),
    "freeCompute": ("POST", f"{SERVICES}/freeCompute"),
    "computeStreamableLogs": ("GET", f"{SERVICES}/computeStreamableLogs"),
    "getDDO": ("GET", "/api/aquarius/assets/ddo/:did"),
    "validateDDO": ("POST", "/api/aquarius/assets/ddo/validate"),
}


@router.get("/", summary="Provider information and endpoint map")
def root(services: ServicesDep) -> ProviderInfo:
    chain_id = services.settings.chain.chain_id
    return ProviderInfo(
        software="Provider",
        version="2.1.6",
        implementation="c2d-node",
        provider_addresses={str(chain_id): services.address},
        provider_address=services.address,
        node_public_key=services.public_key,
        chain_ids=[chain_id],
        service_endpoints=SERVICE_ENDPOINTS,
    )
