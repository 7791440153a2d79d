"""DDO documents as stored on chain by ``setMetaData``: compact JSON, optionally lzma-compressed
(flags bit 0) and ECIES-encrypted to the provider's key (flags bit 1), with ``sha256`` of the JSON as
the metadata hash. Ocean's clients (ocean.py) and provider use exactly this scheme.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from typing import Any

import ecies
from eth_keys.datatypes import PrivateKey

from c2d.exceptions import C2DError

FLAG_COMPRESSED = 0x01
FLAG_ENCRYPTED = 0x02
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024


class DocumentError(C2DError):
    """A document cannot be decoded (bad flags, wrong key, corrupt data, hash mismatch)."""


def ddo_bytes(ddo: dict[str, Any]) -> bytes:
    return json.dumps(ddo, separators=(",", ":")).encode()


def ddo_hash(document: bytes) -> bytes:
    return hashlib.sha256(document).digest()


def public_key_hex(private_key: bytes) -> str:
    """Uncompressed secp256k1 public key (0x hex) of a private key: what documents are encrypted to."""
    return str(PrivateKey(private_key).public_key.to_hex())


def encrypt(data: bytes, public_key_hex: str) -> bytes:
    return ecies.encrypt(public_key_hex, data)


def decrypt(data: bytes, private_key_hex: str) -> bytes:
    try:
        return ecies.decrypt(private_key_hex, data)
    except (ValueError, TypeError) as exc:
        raise DocumentError(f"cannot decrypt the document with this provider's key: {exc}") from None


def decode_document(flags: bytes, data: bytes, private_key_hex: str, expected_hash: bytes) -> dict[str, Any]:
    """The DDO of a MetadataCreated/Updated event, checked against its metadata hash."""
    flag = flags[0] if flags else 0
    if flag & ~(FLAG_COMPRESSED | FLAG_ENCRYPTED):
        raise DocumentError(f"unknown document flags {flag:#x}")
    if flag & FLAG_ENCRYPTED:
        data = decrypt(data, private_key_hex)
    if flag & FLAG_COMPRESSED:
        try:
            decompressor = lzma.LZMADecompressor()
            data = decompressor.decompress(data, max_length=MAX_DOCUMENT_BYTES)
        except lzma.LZMAError as exc:
            raise DocumentError(f"document is not valid lzma: {exc}") from None
        if not decompressor.eof:
            raise DocumentError(f"document is larger than {MAX_DOCUMENT_BYTES} bytes")
    if ddo_hash(data) != expected_hash:
        raise DocumentError("document does not match its metadata hash")
    try:
        ddo = json.loads(data)
    except ValueError as exc:
        raise DocumentError(f"document is not JSON: {exc}") from None
    if not isinstance(ddo, dict):
        raise DocumentError("document is not a JSON object")
    return ddo
