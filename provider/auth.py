"""Consumer request signatures and nonces, exactly as Ocean's provider checks them (§1.2 of the notes).

The signed text is the request's fields concatenated without separators, then the nonce string as
received; the nonce must be strictly greater than the last one the address used (stored in Postgres).
"""

from __future__ import annotations

from web3 import Web3

from c2d.chain.signing import SignatureError, recover_signer
from c2d.db.nonces import NonceStore, parse_nonce
from c2d.exceptions import NonceError
from provider.exceptions import RequestValidationFailed

DEFAULT_MESSAGE = "Invalid signature provided. Please check the nonce or documentId."


def required_address(address: str | None, field: str = "consumerAddress") -> str:
    """``address`` in its checksummed form; Ocean's validation error on ``field`` when it is missing or is not
    an Ethereum address."""
    if not address:
        raise RequestValidationFailed({field: [f"The {field} field is required."]})
    if not Web3.is_address(address):
        raise RequestValidationFailed({field: [f"The {field} must be an Ethereum address."]})
    return Web3.to_checksum_address(address)


def verify_request(nonces: NonceStore, signer: str, message: str, nonce: str | None, signature: str | None) -> None:
    """Check ``signature`` over ``message + nonce`` by ``signer``, then consume the nonce (atomically)."""
    if nonce is None or nonce == "":
        raise RequestValidationFailed({"nonce": ["The nonce field is required."]})
    if not signature:
        raise RequestValidationFailed({"signature": ["The signature field is required."]})
    try:
        parse_nonce(nonce)
    except NonceError as exc:
        raise RequestValidationFailed({"nonce": [str(exc)]}) from None
    try:
        recovered = recover_signer(message + nonce, signature)
    except SignatureError as exc:
        raise RequestValidationFailed({"signature": f"Invalid signature: {exc}."}) from None
    if recovered != signer:
        raise RequestValidationFailed(
            {
                "signature": f"Invalid signature {signature} for ethereum address {signer}, message {message} "
                f"and nonce {nonce}. Got {recovered}"
            }
        )
    try:
        nonces.accept(signer, nonce)
    except NonceError as exc:
        raise RequestValidationFailed({"signature": f"Invalid signature: {exc}."}) from None
