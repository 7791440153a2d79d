"""Request nonces per address: compared numerically, strictly increasing, never reusable."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from c2d.db.pool import Pool
from c2d.exceptions import NonceError


def parse_nonce(value: str | int | float | Decimal) -> Decimal:
    """A nonce as a finite, non-negative number (clients send ints, float strings or ns timestamps)."""
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise NonceError(f"nonce {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise NonceError(f"nonce {value!r} must be a finite number >= 0")
    return number


class NonceStore:
    """Repository of the ``nonces`` table. Addresses are stored lower-case."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def current(self, address: str) -> Decimal | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT nonce FROM nonces WHERE address = %s", (address.lower(),)).fetchone()
        return Decimal(str(row[0])) if row else None

    def accept(self, address: str, nonce: str | int | float | Decimal) -> Decimal:
        """Store ``nonce`` if it is strictly greater than the stored one, atomically; else NonceError."""
        number = parse_nonce(nonce)
        with self.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO nonces (address, nonce) VALUES (%s, %s) "
                "ON CONFLICT (address) DO UPDATE SET nonce = EXCLUDED.nonce, updated_at = clock_timestamp() "
                "WHERE nonces.nonce < EXCLUDED.nonce RETURNING nonce",
                (address.lower(), number),
            ).fetchone()
        if row is None:
            stored = self.current(address)
            raise NonceError(f"nonce {nonce} is not greater than the last one used ({stored}); sign a new one")
        return number
