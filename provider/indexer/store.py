"""Repository of indexed DDOs and the indexer's progress (tables ``ddos``, ``indexer_state``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from c2d.db.pool import Pool
from provider.models import Ddo

DID = re.compile(r"^did:op:[0-9a-f]{64}$")


@dataclass(frozen=True)
class IndexedDdo:
    did: str
    nft_address: str
    tx_hash: str
    block: int
    log_index: int
    ddo: Ddo


@dataclass(frozen=True)
class OwnerChange:
    """An ERC721 Transfer of a data NFT: its new owner, at (block, log index)."""

    nft_address: str
    owner: str
    block: int
    log_index: int


class DdoStore:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool

    def get(self, did: str) -> Ddo | None:
        if not DID.match(did):  # not a DID (nor anything the database could hold, like a NUL byte)
            return None
        with self.pool.connection() as conn:
            row = conn.execute("SELECT ddo FROM ddos WHERE did = %s", (did,)).fetchone()
        return dict(row[0]) if row else None  # type: ignore[call-overload]

    def search(self, limit: int, offset: int = 0, text: str | None = None) -> list[Ddo]:
        query = "SELECT ddo FROM ddos"
        params: list[Any] = []
        if text:
            query += " WHERE ddo::text ILIKE %s"
            params.append(f"%{text}%")
        query += " ORDER BY block DESC, log_index DESC LIMIT %s OFFSET %s"
        params += [limit, offset]
        with self.pool.connection() as conn:
            rows = conn.execute(query.encode(), params).fetchall()
        return [dict(row[0]) for row in rows]  # type: ignore[call-overload]

    def last_block(self, chain_id: int) -> int | None:
        with self.pool.connection() as conn:
            row = conn.execute("SELECT last_block FROM indexer_state WHERE chain_id = %s", (chain_id,)).fetchone()
        return int(str(row[0])) if row else None

    def nft_addresses(self, chain_id: int) -> list[str]:
        with self.pool.connection() as conn:
            rows = conn.execute("SELECT nft_address FROM ddos WHERE chain_id = %s", (chain_id,)).fetchall()
        return [str(row[0]) for row in rows]

    def save(
        self,
        chain_id: int,
        to_block: int,
        ddos: list[IndexedDdo],
        rejects: list[tuple[str, int, str, str]],
        owners: Sequence[OwnerChange] = (),
    ) -> None:
        """Store a batch and the progress atomically; an older event never overwrites a newer one, and an
        owner change applies only to a DDO indexed from an earlier event."""
        with self.pool.connection() as conn, conn.transaction():
            for item in ddos:
                conn.execute(
                    "INSERT INTO ddos (did, chain_id, nft_address, ddo, tx_hash, block, log_index) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (did) DO UPDATE SET "
                    "ddo = EXCLUDED.ddo, tx_hash = EXCLUDED.tx_hash, block = EXCLUDED.block, "
                    "log_index = EXCLUDED.log_index, updated_at = clock_timestamp() "
                    "WHERE (ddos.block, ddos.log_index) < (EXCLUDED.block, EXCLUDED.log_index)",
                    (item.did, chain_id, item.nft_address, Jsonb(item.ddo), item.tx_hash, item.block, item.log_index),
                )
            for change in owners:
                conn.execute(
                    "UPDATE ddos SET ddo = jsonb_set(ddo, '{nft,owner}', to_jsonb(%s::text)), "
                    "updated_at = clock_timestamp() WHERE chain_id = %s AND lower(nft_address) = lower(%s) "
                    "AND (block, log_index) < (%s, %s)",
                    (change.owner, chain_id, change.nft_address, change.block, change.log_index),
                )
            for tx_hash, log_index, nft, reason in rejects:
                conn.execute(
                    "INSERT INTO indexer_rejects (chain_id, tx_hash, log_index, nft_address, reason) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    (chain_id, tx_hash, log_index, nft, reason),
                )
            conn.execute(
                "INSERT INTO indexer_state (chain_id, last_block) VALUES (%s, %s) ON CONFLICT (chain_id) "
                "DO UPDATE SET last_block = EXCLUDED.last_block, updated_at = clock_timestamp() "
                "WHERE indexer_state.last_block < EXCLUDED.last_block",
                (chain_id, to_block),
            )

    def rejects(self, chain_id: int) -> list[tuple[str, str]]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT tx_hash, reason FROM indexer_rejects WHERE chain_id = %s ORDER BY at", (chain_id,)
            ).fetchall()
        return [(str(tx), str(reason)) for tx, reason in rows]
