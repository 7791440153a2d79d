"""``GET /api/services/nonce``: the last nonce an address used (clients sign with a greater one)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from provider.auth import required_address
from provider.models import NonceResponse
from provider.services import NoncesDep

router = APIRouter(prefix="/api/services", tags=["auth"])


@router.get("/nonce", summary="Last nonce used by an address (0 when none)")
def nonce(nonces: NoncesDep, user_address: Annotated[str | None, Query(alias="userAddress")] = None) -> NonceResponse:
    address = required_address(user_address, "userAddress")
    stored = nonces.current(address)
    if stored is None:
        return NonceResponse(nonce=0)
    return NonceResponse(nonce=int(stored) if stored == stored.to_integral_value() else str(stored))
