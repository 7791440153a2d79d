"""Ocean's signature schemes: consumer request signatures and provider fees.

Both are EIP-191 ``personal_sign`` over a 32-byte keccak digest:

* request signatures: digest = keccak256(utf8(message + str(nonce))), v in {0, 1, 27, 28} accepted;
* provider fees: digest = keccak256(abi.encodePacked(bytes providerData, address providerFeeAddress,
  address providerFeeToken, uint256 providerFeeAmount, uint256 validUntil)) - exactly what
  ``ERC20Template._checkProviderFee`` re-verifies on chain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_keys.exceptions import BadSignature
from hexbytes import HexBytes
from web3 import Web3

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class SignatureError(ValueError):
    """A signature is malformed or does not recover."""


def sign_message(private_key: str, message: str) -> str:
    """Sign ``message`` (already including the nonce) the way ocean.py does; 0x hex, v in 27/28."""
    signed = Account.sign_message(encode_defunct(primitive=Web3.keccak(text=message)), private_key)
    return HexBytes(signed.signature).to_0x_hex()


def ocean_js_payload(message: str) -> bytes:
    """What ocean.js 8.x signs (EIP-191) for ``message``, and ocean-node checks: the keccak digest as ethers'
    ``toBeArray`` makes it, i.e. without its leading zero bytes (31 bytes or fewer for 1 digest in 256)."""
    return bytes(Web3.keccak(text=message)).lstrip(b"\0")


def signed_payloads(message: str, *, ocean_node: bool = False) -> tuple[bytes, ...]:
    """What a client may have signed for ``message``: the 32-byte keccak digest (ocean.py, Provider v2.1); with
    ``ocean_node``, also the digest without its leading zero bytes (ocean.js) and the digest's 0x hex as text
    (ocean-node's other check, ``verifyMessage(hash)``)."""
    digest = bytes(Web3.keccak(text=message))
    if not ocean_node:
        return (digest,)
    return digest, ocean_js_payload(message), ("0x" + digest.hex()).encode()


def recover_signers(message: str, signature: str, *, ocean_node: bool = False) -> list[str]:
    """The checksummed address recovered from ``signature`` for each of ``message``'s payloads
    (:func:`signed_payloads`), in that order; accepts v in {0, 1, 27, 28}."""
    try:
        raw = bytearray(HexBytes(signature))
    except (ValueError, TypeError) as exc:
        raise SignatureError("signature is not hex") from exc
    if len(raw) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(raw)}")
    if raw[64] in (0, 1):
        raw[64] += 27
    if raw[64] not in (27, 28):
        raise SignatureError(f"signature has an invalid v value {raw[64]}")
    signers: list[str] = []
    for payload in signed_payloads(message, ocean_node=ocean_node):
        try:
            signer = Account.recover_message(encode_defunct(primitive=payload), signature=bytes(raw))
        except (BadSignature, ValueError) as exc:
            raise SignatureError(f"signature does not recover: {exc}") from exc
        signers.append(Web3.to_checksum_address(signer))
    return signers


@dataclass(frozen=True)
class ProviderFee:
    """The ``providerFee`` struct of ``startOrder``/``reuseOrder`` and of initializeCompute's answer."""

    provider_fee_address: str
    provider_fee_token: str
    provider_fee_amount: int
    provider_data: bytes
    v: int
    r: bytes
    s: bytes
    valid_until: int

    def as_struct(self) -> tuple[str, str, int, int, bytes, bytes, int, bytes]:
        """Argument tuple for the contract call (field order of the Solidity struct)."""
        return (
            Web3.to_checksum_address(self.provider_fee_address),
            Web3.to_checksum_address(self.provider_fee_token),
            self.provider_fee_amount,
            self.v,
            self.r,
            self.s,
            self.valid_until,
            self.provider_data,
        )

    def to_wire(self) -> dict[str, Any]:
        """JSON shape the Ocean provider returns (ocean.py reads exactly these keys)."""
        return {
            "providerFeeAddress": self.provider_fee_address,
            "providerFeeToken": self.provider_fee_token,
            "providerFeeAmount": str(self.provider_fee_amount),
            "providerData": "0x" + self.provider_data.hex(),
            "v": self.v,
            "r": "0x" + self.r.hex(),
            "s": "0x" + self.s.hex(),
            "validUntil": self.valid_until,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> ProviderFee:
        """Parse the ``providerFee`` object of initializeCompute (what a client passes to startOrder)."""
        return cls(
            provider_fee_address=str(wire["providerFeeAddress"]),
            provider_fee_token=str(wire["providerFeeToken"]),
            provider_fee_amount=int(wire["providerFeeAmount"]),
            provider_data=bytes(HexBytes(wire["providerData"])),
            v=int(wire["v"]),
            r=bytes(HexBytes(wire["r"])),
            s=bytes(HexBytes(wire["s"])),
            valid_until=int(wire["validUntil"]),
        )

    @property
    def data(self) -> dict[str, Any]:
        """The decoded providerData JSON (environment, timestamp, dt, id)."""
        decoded: dict[str, Any] = json.loads(self.provider_data.decode())
        return decoded


def provider_fee_digest(provider_data: bytes, fee_address: str, fee_token: str, amount: int, valid_until: int) -> bytes:
    return bytes(
        Web3.solidity_keccak(
            ["bytes", "address", "address", "uint256", "uint256"],
            [
                provider_data,
                Web3.to_checksum_address(fee_address),
                Web3.to_checksum_address(fee_token),
                amount,
                valid_until,
            ],
        )
    )


def provider_data_bytes(environment: str, timestamp: float, datatoken: str, service_id: str) -> bytes:
    """providerData exactly as Ocean builds it: compact JSON, keys environment, timestamp, dt, id."""
    return json.dumps(
        {"environment": environment, "timestamp": timestamp, "dt": datatoken, "id": service_id},
        separators=(",", ":"),
    ).encode()


def sign_provider_fee(
    private_key: str, provider_data: bytes, fee_token: str, amount: int, valid_until: int
) -> ProviderFee:
    account = Account.from_key(private_key)
    digest = provider_fee_digest(provider_data, account.address, fee_token, amount, valid_until)
    signed = Account.sign_message(encode_defunct(primitive=digest), private_key)
    v = signed.v if signed.v >= 27 else signed.v + 27
    return ProviderFee(
        provider_fee_address=account.address,
        provider_fee_token=Web3.to_checksum_address(fee_token),
        provider_fee_amount=amount,
        provider_data=provider_data,
        v=v,
        r=signed.r.to_bytes(32, "big"),
        s=signed.s.to_bytes(32, "big"),
        valid_until=valid_until,
    )


def provider_fee_signer(fee: ProviderFee) -> str:
    """Checksummed address that signed a provider fee."""
    digest = provider_fee_digest(
        fee.provider_data,
        fee.provider_fee_address,
        fee.provider_fee_token,
        fee.provider_fee_amount,
        fee.valid_until,
    )
    signature = fee.r + fee.s + bytes([fee.v])
    try:
        return Web3.to_checksum_address(Account.recover_message(encode_defunct(primitive=digest), signature=signature))
    except (BadSignature, ValueError) as exc:
        raise SignatureError(f"provider fee signature does not recover: {exc}") from exc
