"""Aquarius-compatible read API over the indexed DDOs (what ocean.py's ``Aquarius`` client calls)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from c2d.chain.documents import ddo_hash
from provider.exceptions import NotFound, RequestValidationFailed
from provider.services import ServicesDep

router = APIRouter(prefix="/api/aquarius", tags=["metadata"])


@router.get("", summary="Metadata cache information")
def info() -> dict[str, Any]:
    return {"software": "Aquarius", "version": "5.1.0", "implementation": "c2d-node indexer"}


@router.get("/assets/ddo/{did}", summary="The DDO of a DID, as indexed from the chain")
def ddo(did: str, services: ServicesDep) -> dict[str, Any]:
    found = services.ddos.get(did)
    if found is None:
        raise NotFound(f"Asset DID {did} not found in Elasticsearch.")
    return found


@router.get("/assets/metadata/{did}", summary="The metadata section of a DDO")
def metadata(did: str, services: ServicesDep) -> dict[str, Any]:
    found = services.ddos.get(did)
    if found is None:
        raise NotFound(f"Asset DID {did} not found in Elasticsearch.")
    return dict(found.get("metadata") or {})


@router.post("/assets/query", summary="Search (supports size, from and a query_string/match text)")
def query(services: ServicesDep, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    size = min(int(body.get("size", 100)), 1000)
    offset = int(body.get("from", 0))
    text = _query_text(body.get("query") or {})
    hits = services.ddos.search(size, offset, text)
    return {"hits": {"total": {"value": len(hits)}, "hits": [{"_source": ddo} for ddo in hits]}}


def _query_text(query: dict[str, Any]) -> str | None:
    for key in ("query_string", "match", "term", "match_phrase"):
        part = query.get(key)
        if isinstance(part, dict):
            value = part.get("query") if key == "query_string" else next(iter(part.values()), None)
            if isinstance(value, dict):
                value = value.get("query") or value.get("value")
            return str(value).strip("*") if value is not None else None
    return None


@router.post("/assets/ddo/validate", summary="Validate a DDO and sign its hash (validator proof)")
async def validate(request: Request, services: ServicesDep) -> JSONResponse:
    raw = await request.body()
    try:
        document = json.loads(raw)
    except ValueError:
        raise RequestValidationFailed({"ddo": ["The body is not JSON."]}) from None
    errors = [
        f"missing {key}"
        for key in ("id", "version", "chainId", "nftAddress", "metadata", "services")
        if key not in document
    ]
    if errors:
        return JSONResponse(errors, status_code=400)
    digest = ddo_hash(raw)
    # ERC721Template.setMetaData checks ecrecover(keccak256("\x19Ethereum Signed Message:\n32" ++ hash)).
    signed = Account.sign_message(encode_defunct(primitive=digest), services.account.key)
    return JSONResponse(
        {
            "hash": "0x" + digest.hex(),
            "publicKey": services.address,
            "r": ["0x" + signed.r.to_bytes(32, "big").hex()],
            "s": ["0x" + signed.s.to_bytes(32, "big").hex()],
            "v": signed.v,
        }
    )
