"""DDOs as ocean.js reads them: ocean-node's ``indexedMetadata`` next to Aquarius' top-level fields.

ddo-js (ocean.js 8.x) reads the NFT, the metadata event, purgatory and the per-datatoken stats from
``indexedMetadata``; ocean.py reads Aquarius' ``nft``, ``event``, ``datatokens`` at the top level. The indexer
stores the latter; this view adds the former when a DDO is served, so an owner change shows in both.
"""

from __future__ import annotations

import json
from typing import Any

from provider.models import Ddo


def with_indexed_metadata(ddo: Ddo) -> Ddo:
    """``ddo`` plus ``indexedMetadata`` {nft, event{txid, ...}, purgatory, stats}; the stored DDO is not changed."""
    event: dict[str, Any] = dict(ddo.get("event") or {})
    if "tx" in event:
        event["txid"] = event.pop("tx")
    tokens = [token for token in ddo.get("datatokens") or [] if isinstance(token, dict)]
    stats: list[dict[str, Any]] = [
        {
            "datatokenAddress": token.get("address"),
            "name": token.get("name"),
            "symbol": token.get("symbol"),
            "serviceId": token.get("serviceId"),
            "orders": 0,
            "prices": [],
        }
        for token in tokens
    ]
    indexed = {"nft": ddo.get("nft") or {}, "event": event, "purgatory": {"state": False}, "stats": stats}
    return {**ddo, "indexedMetadata": indexed}


def canonical_json(ddo: Ddo) -> bytes:
    """The bytes of JavaScript's ``JSON.stringify(ddo)`` for a parsed DDO (ocean-node hashes these): compact,
    keys in order, non-ASCII as is."""
    return json.dumps(ddo, separators=(",", ":"), ensure_ascii=False).encode()
