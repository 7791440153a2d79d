"""The rows of the ``jobs``, ``job_events`` and ``used_orders`` tables, as the stores return them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class UsedOrder:
    """An order transaction a job consumes; (chain_id, tx_hash) can be used by one job only."""

    chain_id: int
    tx_hash: str
    role: str = "dataset"

    @property
    def normalized_hash(self) -> str:
        value = self.tx_hash.lower()
        return value if value.startswith("0x") else "0x" + value


@dataclass(frozen=True)
class NewJob:
    job_id: str
    owner: str
    environment: str
    engine: str
    did: str | None = None
    input_dids: Sequence[str] = ()
    algo_did: str | None = None
    agreement_id: str | None = None
    chain_id: int | None = None
    workflow_name: str | None = None
    workflow: dict[str, Any] | None = None
    expiry: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    owner: str
    did: str | None
    input_dids: list[str]
    algo_did: str | None
    agreement_id: str | None
    chain_id: int | None
    environment: str
    status: int
    status_text: str
    date_created: datetime
    date_finished: datetime | None
    results: list[dict[str, Any]] | None
    stopreq: int
    removed: int
    engine: str
    workflow_name: str | None
    workflow: dict[str, Any] | None
    expiry: datetime | None
    details: dict[str, Any]
    updated_at: datetime

    @property
    def finished(self) -> bool:
        return self.date_finished is not None


@dataclass(frozen=True)
class JobEvent:
    id: int
    job_id: str
    at: datetime
    old_status: int | None
    status: int
    status_text: str
    source: str
    detail: dict[str, Any]


JOB_ID = re.compile(r"^[0-9a-f]{32}$")
JOB_COLUMNS = (
    "job_id, owner, did, input_dids, algo_did, agreement_id, chain_id, environment, status, status_text, "
    "date_created, date_finished, results, stopreq, removed, engine, workflow_name, workflow, expiry, "
    "details, updated_at"
)
