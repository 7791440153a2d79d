"""ocean-node's request signatures, with its errors: the consumer, or 400/401 and ocean-node's message."""

from __future__ import annotations

from c2d.db.nonces import NonceStore
from provider.auth import required_address, verify_command
from provider.exceptions import NodeProtocolError, ProviderError, RequestValidationFailed


def node_signer(
    nonces: NonceStore,
    sent_address: str | None,
    command: str,
    nonce: str | None,
    signature: str | None,
    *,
    text: bool = False,
) -> str:
    """The consumer (checksummed) once its signature over the address as sent + nonce + ``command`` holds (the nonce
    is then used). Raises :class:`NodeProtocolError`: 400 'Parameter : "consumerAddress" is not a valid web3
    address', 401 'nonce: N is not a valid nonce' or 'consumer address and nonce signature mismatch' (``text``:
    written as text, where ocean-node sends text)."""
    try:
        consumer = required_address(sent_address)
    except ProviderError:
        raise NodeProtocolError('Parameter : "consumerAddress" is not a valid web3 address', text=text) from None
    try:
        verify_command(nonces, consumer, str(sent_address), command, nonce, signature)
    except RequestValidationFailed as exc:
        if "nonce" in exc.errors or str(exc.errors.get("signature", "")).startswith("Invalid signature: nonce"):
            raise NodeProtocolError(f"nonce: {nonce} is not a valid nonce", 401, text=text) from None
        raise NodeProtocolError("consumer address and nonce signature mismatch", 401, text=text) from None
    return consumer
