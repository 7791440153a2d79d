"""``encrypt`` (ECIES to the provider's key, what publishers do to DDOs and file lists) and ``decrypt``."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from hexbytes import HexBytes

from c2d.chain.documents import DocumentError, decode_document, encrypt
from provider.auth import required_address, verify_command, verify_request
from provider.exceptions import PLAIN_TEXT_ERRORS, Forbidden, ProviderError, RequestValidationFailed
from provider.models import DecryptRequest, OpenApi, QueryText
from provider.services import ServicesDep

router = APIRouter(prefix="/api/services", tags=["encryption"])
MAX_ENCRYPT_BYTES = 4 * 1024 * 1024
# read raw (any bytes: a DDO, a file list), so declared here rather than by a parameter
RAW_BODY: OpenApi = {
    "requestBody": {
        "required": True,
        "description": f"the bytes to encrypt (at most {MAX_ENCRYPT_BYTES})",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/encrypt",
    status_code=201,
    response_class=PlainTextResponse,
    summary="Encrypt to this provider",
    response_description="0x hex of the ECIES ciphertext",
    responses=PLAIN_TEXT_ERRORS,
    openapi_extra=RAW_BODY,
)
async def encrypt_document(
    request: Request,
    services: ServicesDep,
    chain_id: Annotated[int | None, Query(alias="chainId")] = None,
    consumer_address: Annotated[str | None, Query(alias="consumerAddress")] = None,
    nonce: QueryText = None,
    signature: QueryText = None,
) -> str:
    """Unsigned (Provider v2.1, ocean.py) or signed over consumer + nonce + ``encrypt`` (ocean-node, ocean.js): a
    request that carries a signature is verified."""
    if chain_id is not None and chain_id != services.settings.chain.chain_id:
        raise ProviderError(f"Unsupported chain ID {chain_id}")
    if signature is not None or nonce is not None:
        signer = required_address(consumer_address)
        await run_in_threadpool(
            verify_command, services.nonces, signer, consumer_address or "", "encrypt", nonce, signature
        )
    data = await request.body()
    if not data:
        raise RequestValidationFailed({"document": ["The request body is empty."]})
    if len(data) > MAX_ENCRYPT_BYTES:
        raise RequestValidationFailed({"document": [f"The document is larger than {MAX_ENCRYPT_BYTES} bytes."]})
    return "0x" + encrypt(data, services.public_key).hex()


@router.post(
    "/decrypt",
    response_class=PlainTextResponse,
    summary="Decrypt a document for an authorized decrypter",
    response_description="the DDO, as JSON text",
    responses=PLAIN_TEXT_ERRORS,
)
def decrypt_document(services: ServicesDep, body: DecryptRequest) -> str:
    decrypter = required_address(body.decrypter_address, "decrypterAddress")
    allowed = {services.address.lower(), *(a.lower() for a in services.settings.provider.authorized_decrypters)}
    if decrypter.lower() not in allowed:
        raise Forbidden("Decrypter not authorized")
    chain_id = body.chain_id or ""
    target = body.transaction_id or body.data_nft_address or ""
    verify_request(services.nonces, decrypter, f"{target}{decrypter}{chain_id}", body.nonce, body.signature)
    try:
        flags = HexBytes("0x00" if body.flags is None else body.flags)
        document = HexBytes(_required(body.encrypted_document, "encryptedDocument"))
        expected = HexBytes(_required(body.document_hash, "documentHash"))
        ddo = decode_document(flags, document, services.account.key.hex(), bytes(expected))
    except (DocumentError, ValueError) as exc:
        raise ProviderError(f"Failed to decrypt: {exc}") from None
    return json.dumps(ddo, separators=(",", ":"))


def _required(value: str | None, field: str) -> str:
    if value is None:
        raise RequestValidationFailed({field: ["This field is required."]})
    return value
