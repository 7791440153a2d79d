"""Aquarius-compatible read API over the indexed DDOs (what ocean.py's ``Aquarius`` client calls)."""

from __future__ import annotations

import json

from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from c2d.chain.documents import ddo_hash
from provider.exceptions import NotFound, RequestValidationFailed
from provider.models import (
    AquariusInfo,
    AquariusQuery,
    Ddo,
    HitCount,
    JsonObject,
    OpenApi,
    QueryResponse,
    SearchHit,
    SearchHits,
    ValidationErrorResponse,
    ValidatorProof,
)
from provider.services import DdosDep, ServicesDep

router = APIRouter(prefix="/api/aquarius", tags=["metadata"])
DDO_KEYS = ("id", "version", "chainId", "nftAddress", "metadata", "services")


@router.get("", summary="Metadata cache information")
def info() -> AquariusInfo:
    return AquariusInfo(software="Aquarius", version="5.1.0", implementation="c2d-node indexer")


@router.get("/assets/ddo/{did}", summary="The DDO of a DID, as indexed from the chain")
def ddo(did: str, ddos: DdosDep) -> Ddo:
    found = ddos.get(did)
    if found is None:
        raise NotFound(f"Asset DID {did} not found in Elasticsearch.")
    return found


@router.get("/assets/metadata/{did}", summary="The metadata section of a DDO")
def metadata(did: str, ddos: DdosDep) -> JsonObject:
    found = ddos.get(did)
    if found is None:
        raise NotFound(f"Asset DID {did} not found in Elasticsearch.")
    return dict(found.get("metadata") or {})


@router.post("/assets/query", summary="Search (supports size, from and a query_string/match text)")
def query(ddos: DdosDep, body: AquariusQuery) -> QueryResponse:
    size = min(body.size, 1000)
    hits = ddos.search(size, body.from_, _query_text(body.query or {}))
    return QueryResponse(hits=SearchHits(total=HitCount(value=len(hits)), hits=[SearchHit(source=d) for d in hits]))


def _query_text(query: JsonObject) -> str | None:
    for key in ("query_string", "match", "term", "match_phrase"):
        part = query.get(key)
        if isinstance(part, dict):
            value = part.get("query") if key == "query_string" else next(iter(part.values()), None)
            if isinstance(value, dict):
                value = value.get("query") or value.get("value")
            return str(value).strip("*") if value is not None else None
    return None


# The body is read raw (its hash is signed, byte for byte), so it is declared here, not by a parameter.
DDO_BODY: OpenApi = {
    "requestBody": {
        "required": True,
        "description": "the DDO, as JSON",
        "content": {"application/json": {"schema": {"type": "object", "additionalProperties": True}}},
    }
}
MISSING_KEYS: OpenApi = {
    "description": "Aquarius' list of what the DDO lacks (['missing id', ...]), or a body that is not JSON",
    "model": list[str] | ValidationErrorResponse,
}


@router.post(
    "/assets/ddo/validate",
    summary="Validate a DDO and sign its hash (validator proof)",
    response_model=ValidatorProof,
    responses={400: MISSING_KEYS},
    openapi_extra=DDO_BODY,
)
async def validate(request: Request, services: ServicesDep) -> ValidatorProof | JSONResponse:
    """400 with Aquarius' list of missing keys for a JSON value without them (a non-object lacks them all)."""
    raw = await request.body()
    try:
        document = json.loads(raw)
    except ValueError:
        raise RequestValidationFailed({"ddo": ["The body is not JSON."]}) from None
    keys = document if isinstance(document, dict) else {}
    errors = [f"missing {key}" for key in DDO_KEYS if key not in keys]
    if errors:
        return JSONResponse(errors, status_code=400)
    digest = ddo_hash(raw)
    # ERC721Template.setMetaData checks ecrecover(keccak256("\x19Ethereum Signed Message:\n32" ++ hash)).
    signed = Account.sign_message(encode_defunct(primitive=digest), services.account.key)
    return ValidatorProof(
        hash="0x" + digest.hex(),
        public_key=services.address,
        r=["0x" + signed.r.to_bytes(32, "big").hex()],
        s=["0x" + signed.s.to_bytes(32, "big").hex()],
        v=signed.v,
    )
