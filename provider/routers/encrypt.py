"""``encrypt`` (ECIES to the provider's key, what publishers do to DDOs and file lists) and ``decrypt``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import PlainTextResponse
from hexbytes import HexBytes

from c2d.chain.documents import DocumentError, decode_document, encrypt
from provider.auth import checksum, verify_request
from provider.exceptions import Forbidden, ProviderError, RequestValidationFailed
from provider.services import ServicesDep

router = APIRouter(prefix="/api/services", tags=["encryption"])
MAX_ENCRYPT_BYTES = 4 * 1024 * 1024


@router.post("/encrypt", status_code=201, response_class=PlainTextResponse, summary="Encrypt to this provider")
async def encrypt_document(
    request: Request, services: ServicesDep, chain_id: Annotated[int | None, Query(alias="chainId")] = None
) -> str:
    if chain_id is not None and chain_id != services.settings.chain.chain_id:
        raise ProviderError(f"Unsupported chain ID {chain_id}")
    data = await request.body()
    if not data:
        raise RequestValidationFailed({"document": ["The request body is empty."]})
    if len(data) > MAX_ENCRYPT_BYTES:
        raise RequestValidationFailed({"document": [f"The document is larger than {MAX_ENCRYPT_BYTES} bytes."]})
    return "0x" + encrypt(data, services.public_key).hex()


@router.post("/decrypt", response_class=PlainTextResponse, summary="Decrypt a document for an authorized decrypter")
def decrypt_document(services: ServicesDep, body: Annotated[dict[str, Any], Body()]) -> str:
    decrypter = checksum(body.get("decrypterAddress"), "decrypterAddress")
    allowed = {services.address.lower(), *(a.lower() for a in services.settings.provider.authorized_decrypters)}
    if decrypter.lower() not in allowed:
        raise Forbidden("Decrypter not authorized")
    chain_id = str(body.get("chainId", ""))
    target = str(body.get("transactionId") or body.get("dataNftAddress") or "")
    verify_request(
        services.nonces, decrypter, f"{target}{decrypter}{chain_id}", _text(body.get("nonce")), body.get("signature")
    )
    try:
        flags = HexBytes(str(body.get("flags", "0x00")))
        document = HexBytes(str(body["encryptedDocument"]))
        expected = HexBytes(str(body["documentHash"]))
        ddo = decode_document(flags, document, services.account.key.hex(), bytes(expected))
    except KeyError as exc:
        raise RequestValidationFailed({str(exc.args[0]): ["This field is required."]}) from None
    except (DocumentError, ValueError) as exc:
        raise ProviderError(f"Failed to decrypt: {exc}") from None
    return json.dumps(ddo, separators=(",", ":"))


def _text(value: object) -> str | None:
    return None if value is None else str(value)
