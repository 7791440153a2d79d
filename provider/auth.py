"""Consumer request signatures and nonces, as Ocean's provider v2.1 and ocean-node check them.

Two messages exist. Provider v2.1 (ocean.py): the request's fields concatenated without separators, then
the nonce string as received (:func:`verify_request`). ocean-node (ocean.js 8.x): the consumer address as
sent, the nonce, then the command name, e.g. ``"0xAb..." + "5" + "startCompute"`` (:func:`verify_command`).
Either way the nonce must be strictly greater than the last one the address used (stored in Postgres).
"""

from __future__ import annotations

from collections.abc import Callable

from web3 import Web3

from c2d.chain.signing import SignatureError, recover_signers
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
    _verify(nonces, signer, message, nonce, signature, lambda n: ((message + n, False),))


def verify_request_or_command(
    nonces: NonceStore,
    signer: str,
    message: str,
    sent_address: str,
    command: str,
    nonce: str | None,
    signature: str | None,
) -> None:
    """For endpoints both protocols share (stop, delete, result): the signature may be over Provider v2.1's
    ``message + nonce`` or ocean-node's ``sent_address + nonce + command``; the nonce is used once either way."""
    _verify(
        nonces,
        signer,
        message,
        nonce,
        signature,
        lambda n: ((message + n, False), (f"{sent_address}{n}{command}", True)),
    )


def verify_job_request(
    nonces: NonceStore,
    owner: str,
    job_id: str | None,
    document_id: str | None,
    nonce: str | None,
    signature: str | None,
    command: tuple[str | None, str] | None = None,
) -> None:
    """Provider v2.1's rule for a request about the consumer's jobs (stop, delete; ocean.py 3.1.2 signs its status
    requests the same way): ``signature`` by ``owner`` (checksummed) over ``owner + jobId + documentId + nonce``,
    an absent field as ``""``; then the nonce is consumed. A DB write: call it off the event loop. ``command``:
    (the address as sent, ocean-node's command), whose signature (address + nonce + command) holds too."""
    message = f"{owner}{job_id or ''}{document_id or ''}"
    if command is None:
        verify_request(nonces, owner, message, nonce, signature)
    else:
        sent, name = command
        verify_request_or_command(nonces, owner, message, sent or "", name, nonce, signature)


def verify_command(
    nonces: NonceStore, signer: str, sent_address: str, command: str, nonce: str | None, signature: str | None
) -> None:
    """Check ocean-node's request signature: over ``sent_address + nonce + command`` (the address exactly as the
    client sent it) by ``signer``, then consume the nonce. Ocean's ``PROTOCOL_COMMANDS`` names the commands:
    ``startCompute``, ``freeStartCompute``, ``stopCompute``, ``getComputeResult``, ``getComputeStreamableLogs``,
    ``encrypt``, ``validateDDO``, ..."""
    _verify(
        nonces,
        signer,
        f"{sent_address} + nonce + {command}",
        nonce,
        signature,
        lambda n: ((f"{sent_address}{n}{command}", True),),
    )


def _verify(
    nonces: NonceStore,
    signer: str,
    message: str,
    nonce: str | None,
    signature: str | None,
    signed_texts: Callable[[str], tuple[tuple[str, bool], ...]],
) -> None:
    """``signed_texts(nonce)``: each text the signature may be over, and whether it is ocean-node's (ocean.js signs
    its keccak digest as ethers' ``toBeArray`` makes it: without leading zero bytes)."""
    if nonce is None or nonce == "":
        raise RequestValidationFailed({"nonce": ["The nonce field is required."]})
    if not signature:
        raise RequestValidationFailed({"signature": ["The signature field is required."]})
    try:
        parse_nonce(nonce)
    except NonceError as exc:
        raise RequestValidationFailed({"nonce": [str(exc)]}) from None
    recovered = ""
    for text, ocean_node in signed_texts(nonce):
        try:
            candidates = recover_signers(text, signature, ocean_node=ocean_node)
        except SignatureError as exc:
            raise RequestValidationFailed({"signature": f"Invalid signature: {exc}."}) from None
        recovered = signer if signer in candidates else candidates[0]
        if recovered == signer:
            break
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
