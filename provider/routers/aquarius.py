"""Aquarius-compatible read API over the indexed DDOs (what ocean.py's ``Aquarius`` client calls, and ocean.js's
``Aquarius`` against ocean-node: DDOs carry ``indexedMetadata`` too, validate takes ocean-node's signed body)."""

from __future__ import annotations

import json

from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from c2d.chain.documents import ddo_hash
from provider.auth import required_address, verify_command
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
from provider.ocean_node.ddo import canonical_json, with_indexed_metadata
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
    return with_indexed_metadata(found)


@router.get("/assets/metadata/{did}", summary="The metadata section of a DDO")
def metadata(did: str, ddos: DdosDep) -> JsonObject:
    found = ddos.get(did)
    if found is None:
        raise NotFound(f"Asset DID {did} not found in Elasticsearch.")
    return dict(found.get("metadata") or {})


@router.post("/assets/query", summary="Search (supports size, from and a query_string/match text)")
@router.post("/assets/metadata/query", summary="Search, at ocean-node's path (the same search)")
def query(ddos: DdosDep, body: AquariusQuery) -> QueryResponse:
    size = min(body.size, 1000)
    hits = ddos.search(size, body.from_, _query_text(body.query or {}))
    sources = [SearchHit(source=with_indexed_metadata(d)) for d in hits]
    return QueryResponse(hits=SearchHits(total=HitCount(value=len(hits)), hits=sources))


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
    """The body is the DDO (Aquarius, ocean.py: its bytes are hashed) or ocean-node's ``{ddo, publisherAddress,
    nonce, signature}`` signed over publisher + nonce + ``validateDDO`` (ocean.js: the hash is over
    ``JSON.stringify(ddo)``). 400 with Aquarius' list of missing keys for a DDO without them."""
    raw = await request.body()
    try:
        document = json.loads(raw)
    except ValueError:
        raise RequestValidationFailed({"ddo": ["The body is not JSON."]}) from None
    if isinstance(document, dict) and "publisherAddress" in document and isinstance(document.get("ddo"), dict):
        sent = str(document["publisherAddress"])
        publisher = required_address(sent, "publisherAddress")
        nonce, signature = document.get("nonce"), document.get("signature")
        await run_in_threadpool(
            verify_command,
            services.nonces,
            publisher,
            sent,
            "validateDDO",
            None if nonce is None else str(nonce),
            None if signature is None else str(signature),
        )
        document = document["ddo"]
        raw = canonical_json(document)
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
