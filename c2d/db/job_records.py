"""The rows of the ``jobs``, ``job_events`` and ``used_orders`` tables, as the stores return them."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NotRequired, TypedDict


class ResultEntry(TypedDict):
    """One entry of a job's result list (``jobs.results``): what output-publish wrote into ``results.json``.
    ``filename``, ``filesize`` and ``type`` are public (the status object); the location is the node's own."""

    filename: str  # e.g. "outputs/summary.json", "logs/algorithm.log"
    filesize: int
    type: str  # "output", "algorithmLog", "configurationLog", "publishLog"
    path: NotRequired[str]  # local store or results claim: relative to the job's folder
    url: NotRequired[str]  # S3 (s3://bucket/key) or IPFS (ipfs://cid)
    cid: NotRequired[str]  # IPFS


class StepDetail(TypedDict, total=False):
    """One step's state in ``jobs.details.steps`` (keys absent until known). Argo's node phases."""

    phase: str  # Pending, Running, Succeeded, Failed, Error, Omitted
    exitCode: int
    message: str
    reason: str  # local engine: why it ended ("deadline", "memory", ...)
    startedAt: str
    finishedAt: str
    attempt: int  # local engine: the retry attempt (0 = first)
    runner: str  # local engine: "warm" or "cold"
    results: list[ResultEntry]  # local engine: the publish step's result list (kept for recovery)


class OutputRequest(TypedDict):
    """``jobs.details.output``: the consumer asked to publish the results as a new asset (provider)."""

    publishOutput: bool
    publishAlgorithmLog: bool
    name: str
    description: str


class ResultAssetState(TypedDict, total=False):
    """``jobs.details.resultAsset``: how far publishing the results as an asset got (provider, resumable)."""

    nft: str
    datatoken: str
    did: str
    owner: str
    attempts: int
    error: str


class ArgoWorkflowRef(TypedDict, total=False):
    """``jobs.details.argo``: the job's Workflow on the cluster (argo engine)."""

    namespace: str
    workflow: str
    uid: str
    ui: str  # the Argo UI's page of the Workflow, when C2D_ENGINE__ARGO__UI_URL or the server URL is set


class JobPaymentRecord(TypedDict, total=False):
    """``jobs.details.compute.payment``: an escrow-paid job's lock and how it was settled (amounts in the token's
    smallest unit, as decimal strings)."""

    chainId: int
    token: str
    escrow: str
    amount: str  # locked
    prices: dict[str, float]  # per unit per started minute, as at the start: what the claim charges
    minJobDuration: int  # seconds charged at least
    lockTx: str
    claimTx: str
    cancelTx: str
    cost: str  # claimed


class ComputeTerms(TypedDict, total=False):
    """``jobs.details.compute``: the terms of a job started through ocean-node's protocol (ocean.js): the resources
    it was given, free or escrow-paid, its duration limit, the consumer's metadata and viewers."""

    resources: dict[str, float]  # cpu cores, ram GB, disk GB
    free: bool
    maxJobDuration: int
    queueMaxWaitTime: int  # seconds it may wait for room before it expires (0: it was started at once)
    payment: JobPaymentRecord
    metadata: dict[str, Any]
    additionalViewers: list[str]


class JobDetails(TypedDict, total=False):
    """``jobs.details``: what the engines and the provider record about a job besides its status. Writers
    merge their keys in (``JobStore.update_details``, ``advance``, ``transition``); every key is optional."""

    steps: dict[str, StepDetail]  # by task name
    argoPhase: str  # argo engine: the Workflow's phase
    argo: ArgoWorkflowRef
    submittedAt: str  # argo engine (c2d/db/engine_queue.py): when each action was done, ISO 8601
    shutdownSentAt: str
    workflowDeletedAt: str
    sandboxUid: int  # local engine: the host uid its sandboxes ran as (resumed after a restart)
    limitsNotEnforced: list[str]  # local engine: limits this host could not enforce ("memory", "pids", ...)
    protectionsMissing: list[str]  # local engine: sandbox protections this host lacks
    gpus: list[int]  # local engine: the host GPU indexes granted to it (/dev/nvidia<N>)
    output: OutputRequest
    resultAsset: ResultAssetState
    compute: ComputeTerms


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
    details: JobDetails = field(default_factory=lambda: JobDetails())


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
    results: list[ResultEntry] | None
    stopreq: int
    removed: int
    engine: str
    workflow_name: str | None
    workflow: dict[str, Any] | None
    expiry: datetime | None
    details: JobDetails
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
