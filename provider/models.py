"""The provider API on the wire: what each endpoint takes and answers, in Ocean Provider v2.1's shapes.

Contracts, for every model here:

* Field names on the wire are Ocean's (camelCase, as ocean.py and ocean.js send and read them); in Python
  they are snake_case with the wire name as alias. Responses are written by alias.
* Requests ignore fields they do not name (ocean.py sends some, e.g. ``userdata``),
  and are read by wire name only.
* Request fields are optional on purpose where Ocean answers a missing one with an error body of its own:
  the domain code (provider/auth.py, assets.py, initialize.py, start.py...) raises that error, not the
  schema. A number is accepted where a request declares a string (read as ``str(number)``, as the untyped
  code did), and an optional object given as ``{}`` (or another empty/false value) is taken as not given,
  as ``body.get(key) or {}`` did. A value of another type is refused: 400, Ocean's validation body.
* Responses are validated and written by FastAPI with these models, so the OpenAPI document describes
  them and a response that drifts from its model fails (schemathesis checks them). Where a key is left
  out of Ocean's answer instead of being null, the route writes ``exclude_none`` or ``exclude_unset``.
* DDOs are open documents (:data:`Ddo`): the provider passes them on as indexed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from fastapi import Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

Ddo = dict[str, Any]
"""A DDO (Ocean DDO 4.x) as indexed from the chain, with Aquarius' ``nft``, ``datatokens`` and ``event``."""

JsonObject = dict[str, Any]
"""A JSON object the provider passes on or reads a few keys of (a DDO's metadata, a search query)."""

QueryText = Annotated[str | None, Query()]
"""A query parameter read as text, optional in the schema: where it is missing, the route answers with Ocean's
own error body for it."""

OpenApi = dict[str, Any]
"""A fragment of the OpenAPI document (a schema, a response), where a route describes what FastAPI cannot
derive from its signature (a raw body, a file)."""


def _absent_if_empty(value: object) -> object:
    """``{}``, ``""``, ``0``, ``false``, ``[]`` and null all mean "not given" (what ``body.get(k) or {}`` read)."""
    return value or None


def _empty_admitted(schema: OpenApi) -> None:
    options = schema.get("anyOf")
    if isinstance(options, list):
        options.append({"enum": [False, 0, "", []], "description": "empty: taken as not given"})


def _int(value: object) -> int:
    """What Python's ``int()`` makes of a JSON value (5.7 -> 5, true -> 1, " 5 " -> 5), or a validation error."""
    if isinstance(value, int | float | str):
        try:
            return int(value)
        except (ValueError, OverflowError):
            pass
    raise ValueError("Input should be an integer")


IntLike = Annotated[
    int,
    BeforeValidator(_int),
    WithJsonSchema(
        {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string", "pattern": r"^\s*[-+]?[0-9_]+\s*$"}]}
    ),
]
"""An integer read as ``int(value)`` reads it (the untyped code did): numbers, booleans, digit strings."""


def _text(value: object) -> object:
    """A JSON number as ``str(number)`` reads it; a string as it is (anything else fails as a string)."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


NumberOrText = Annotated[
    str, BeforeValidator(_text), WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "number"}]})
]
"""A string a client may send as a number (a chain id, a nonce, flags, a time): read as ``str(value)``."""

_T = TypeVar("_T")
OrEmpty = Annotated[_T | None, BeforeValidator(_absent_if_empty), Field(json_schema_extra=_empty_admitted)]
"""An optional object of a request; an empty value (``{}``, ``""``, ``0``, ``false``, ``[]``) is read as None."""


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields ignored, numbers accepted as strings, read by wire name."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: object) -> object:
        """Anything but an object is refused with the message a ``dict`` body had."""
        if not isinstance(data, dict):
            raise PydanticCustomError("dict_type", "Input should be a valid dictionary")
        return data


class WireModel(BaseModel):
    """Base of responses: built in Python by field name, written by alias."""

    model_config = ConfigDict(populate_by_name=True, frozen=True)


# -- errors (provider/exceptions.py raises them, provider/app.py writes them) ----------------------------
class ParseErrorResponse(WireModel):
    """FastAPI's own answer to a body it cannot decode (not UTF-8): ``{"detail": "There was an error parsing
    the body"}``."""

    detail: str


class ErrorResponse(WireModel):
    """``{"error": "<message>"}``, or Ocean's compute validation ``{"error": {"<resource>": "<code>"}}``
    with a readable ``reason`` when there is one."""

    error: str | dict[str, str]
    reason: str | None = None


class ValidationErrorResponse(WireModel):
    """Ocean's (flask-sieve) shape for a missing or malformed field, signature or nonce: ``errors`` maps
    the field to its messages (a list, or one message for signatures)."""

    message: Literal["Validation error"] = "Validation error"
    errors: dict[str, list[str] | str]
    success: Literal[False] = False


# -- GET / and GET /api/services/nonce -------------------------------------------------------------
class ProviderInfo(WireModel):
    """Who the node is and where every endpoint lives: ocean.py reads ``providerAddresses``, ocean.js
    ``providerAddress`` and ``nodePublicKey``; both discover URLs from ``serviceEndpoints``."""

    software: str
    version: str
    implementation: str
    provider_addresses: dict[str, str] = Field(alias="providerAddresses", description="chain id -> address")
    provider_address: str = Field(alias="providerAddress", description="the node's address (ocean-node)")
    node_public_key: str = Field(alias="nodePublicKey", description="secp256k1 public key, 0x hex (ECIES)")
    chain_ids: list[int] = Field(alias="chainIds")
    service_endpoints: dict[str, list[str]] = Field(
        alias="serviceEndpoints", description="endpoint name -> [method, path]"
    )


class NonceResponse(WireModel):
    """The last nonce the address used: 0 when none, an integer, or a decimal string when not integral."""

    nonce: int | str


# -- POST /api/services/decrypt ----------------------------------------------------------------------
class DecryptRequest(RequestModel):
    """A decrypter (the provider itself or an authorized address) asks for a DDO it encrypted; signed over
    ``transactionId`` (or ``dataNftAddress``) + decrypter + chain id, then the nonce."""

    decrypter_address: str | None = Field(None, alias="decrypterAddress")
    chain_id: NumberOrText | None = Field(None, alias="chainId")
    transaction_id: str | None = Field(None, alias="transactionId")
    data_nft_address: str | None = Field(None, alias="dataNftAddress")
    encrypted_document: str | None = Field(None, alias="encryptedDocument", description="0x hex")
    flags: NumberOrText | None = Field(None, description="0x hex or a number: bit 0 compressed, bit 1 encrypted")
    document_hash: str | None = Field(None, alias="documentHash", description="0x sha256 of the document")
    nonce: NumberOrText | None = None
    signature: str | None = None


# -- POST /api/services/fileinfo ------------------------------------------------------------------------
class FileInfoRequest(RequestModel):
    """The files of one service of an asset; ``checksum`` (any true value) also hashes their content."""

    did: str | None = None
    service_id: str | None = Field(None, alias="serviceId")
    checksum: bool | int | float | str | None = None


class FileInfo(WireModel):
    """One file of a service, never its URL: ``valid`` false (and nothing more) when it cannot be read."""

    index: int
    type: str
    valid: bool
    content_type: str | None = Field(None, alias="contentType")
    content_length: str | None = Field(None, alias="contentLength", description="as the source announced it")
    checksum: str | None = Field(None, description="sha256 hex of the content, when asked for")


# -- POST /api/services/initializeCompute and POST /api/services/compute ------------------------------
class ComputeInput(RequestModel):
    """An asset a job takes: its DID, the service, and (once ordered) the order's transaction."""

    document_id: str | None = Field(None, alias="documentId")
    service_id: str | None = Field(None, alias="serviceId")
    transfer_tx_id: str | None = Field(None, alias="transferTxId")


class ContainerRequest(RequestModel):
    """The container a raw algorithm runs in."""

    entrypoint: str | None = None
    image: str | None = None
    tag: str | None = None
    checksum: str | None = Field(None, description="sha256:<hex> of the image")


class AlgorithmMeta(RequestModel):
    """A raw algorithm (no DID): its code inline or at an http(s) URL, and its container."""

    rawcode: str | None = None
    url: str | None = None
    container: OrEmpty[ContainerRequest] = None


class ComputeAlgorithm(ComputeInput):
    """The algorithm of a job: a published one (``documentId``...) or a raw one (``meta``)."""

    meta: OrEmpty[AlgorithmMeta] = None
    algocustomdata: JsonObject | None = Field(None, description="handed to the algorithm as given")


class ComputeParams(RequestModel):
    """``compute`` of initializeCompute: the environment and how long the provider fee must stay valid."""

    env: str | None = None
    valid_until: NumberOrText | None = Field(None, alias="validUntil", description="unix time, seconds")


class ResourceRequest(RequestModel):
    """An amount of one resource a job asks for (ocean-node): ``cpu`` cores, ``ram``/``disk`` GB."""

    id: str | None = None
    amount: float | None = None


class PaymentRequest(RequestModel):
    """ocean-node's ``payment``: the chain and token an escrow-paid job is paid in (and, from initializeCompute,
    the resources to price)."""

    chain_id: IntLike | None = Field(None, alias="chainId")
    token: str | None = None
    resources: list[ResourceRequest] | None = None
    max_job_duration: float | None = Field(None, alias="maxJobDuration")


class InitializeComputeRequest(RequestModel):
    """initializeCompute, for both protocols. Provider v2.1 (ocean.py): ``compute{env, validUntil}``: which orders
    are still valid and which provider fees to pay. ocean-node (ocean.js 8.x): ``environment``, ``payment``,
    ``maxJobDuration``: the same per input, plus the escrow payment the job needs."""

    datasets: list[ComputeInput] | None = None
    algorithm: OrEmpty[ComputeAlgorithm] = None
    compute: OrEmpty[ComputeParams] = None
    consumer_address: str | None = Field(None, alias="consumerAddress")
    environment: str | None = None
    payment: OrEmpty[PaymentRequest] = None
    max_job_duration: float | None = Field(None, alias="maxJobDuration")
    queue_max_wait_time: float | None = Field(None, alias="queueMaxWaitTime")

    @property
    def node_protocol(self) -> bool:
        """ocean-node's request (``environment``/``payment``, no ``compute``)."""
        return self.compute is None and (self.payment is not None or self.environment is not None)


class ProviderFeeResponse(WireModel):
    """A provider fee signed by the provider key, the arguments of ``startOrder`` (ocean.py reads these)."""

    provider_fee_address: str = Field(alias="providerFeeAddress")
    provider_fee_token: str = Field(alias="providerFeeToken")
    provider_fee_amount: str = Field(alias="providerFeeAmount", description="in the token's smallest unit")
    provider_data: str = Field(alias="providerData")
    v: int
    r: str
    s: str
    valid_until: int = Field(alias="validUntil")


class InitializedInput(WireModel):
    """One input's answer: ``validOrder`` alone (still valid, unused), or the fee to pay with ``startOrder``,
    plus ``validOrder`` when the order can be reused (``reuseOrder`` pays only the new fee)."""

    datatoken: str | None = None
    provider_fee: ProviderFeeResponse | None = Field(None, alias="providerFee")
    valid_order: str | None = Field(None, alias="validOrder")


class InitializeComputeResponse(WireModel):
    """One answer per dataset, in order, and one for a published algorithm (none for a raw one)."""

    datasets: list[InitializedInput]
    algorithm: InitializedInput | None = None


class NodeInitializedInput(WireModel):
    """ocean-node's answer for one input: ``validOrder`` (the order's tx, or false), the asset, the order's
    ``consumerAddress`` (the environment's: orders are made out to the node), and a fee when a new order is
    needed."""

    valid_order: str | Literal[False] = Field(False, alias="validOrder")
    did: str | None = None
    service_id: str | None = Field(None, alias="serviceId")
    datatoken: str | None = None
    chain_id: int | None = Field(None, alias="chainId")
    consumer_address: str | None = Field(None, alias="consumerAddress")
    provider_fee: ProviderFeeResponse | None = Field(None, alias="providerFee")


class PaymentQuote(WireModel):
    """What the consumer must allow the escrow to lock for the job: ``amount`` in the token's smallest unit,
    locked for at least ``minLockSeconds``, payable to ``payee`` (the node)."""

    escrow_address: str = Field(alias="escrowAddress")
    chain_id: int = Field(alias="chainId")
    payee: str
    token: str
    amount: str
    min_lock_seconds: int = Field(alias="minLockSeconds")


class NodeInitializeComputeResponse(WireModel):
    """ocean-node's initializeCompute answer: the algorithm's, each dataset's, and the payment."""

    algorithm: NodeInitializedInput | None
    datasets: list[NodeInitializedInput]
    payment: PaymentQuote


class ComputeStartRequest(RequestModel):
    """POST /compute (and /freeCompute), for both protocols. Provider v2.1 (ocean.py): ``dataset`` (+
    ``additionalDatasets``), signed over consumer + ``dataset.documentId`` + nonce. ocean-node (ocean.js 8.x):
    ``datasets``, ``resources``, ``payment``, ``maxJobDuration``, signed over consumer + nonce + command."""

    dataset: OrEmpty[ComputeInput] = None
    additional_datasets: list[ComputeInput] | None = Field(None, alias="additionalDatasets")
    additional_inputs: list[ComputeInput] | None = Field(
        None, alias="additionalInputs", description="what ocean.py names additionalDatasets: read the same way"
    )
    algorithm: OrEmpty[ComputeAlgorithm] = None
    environment: str | None = None
    consumer_address: str | None = Field(None, alias="consumerAddress")
    nonce: NumberOrText | None = None
    signature: str | None = None
    output: JsonObject | str | None = Field(
        None, description="publishOutput, publishAlgorithmLog, metadata: an object or its JSON text"
    )
    datasets: list[ComputeInput] | None = None
    resources: list[ResourceRequest] | None = None
    payment: OrEmpty[PaymentRequest] = None
    max_job_duration: float | None = Field(None, alias="maxJobDuration")
    chain_id: IntLike | None = Field(None, alias="chainId")
    metadata: JsonObject | None = Field(None, description="the consumer's own notes on the job, kept with it")
    additional_viewers: list[str] | None = Field(None, alias="additionalViewers")
    queue_max_wait_time: float | None = Field(None, alias="queueMaxWaitTime")

    @property
    def node_protocol(self) -> bool:
        """ocean-node's request: ``datasets`` or ``payment`` (ocean.js also sends a legacy-looking ``dataset``)."""
        return self.datasets is not None or self.payment is not None


# -- the compute jobs ------------------------------------------------------------------------------
class ResultFile(WireModel):
    """One result of a job, as clients see it (its index is its position; never where it is stored)."""

    filename: str | None = None
    filesize: int | None = None
    type: str | None = Field(None, description="output, algorithmLog, configurationLog, publishLog")
    index: int | None = Field(None, description="its position: what computeResult's index names")


class ResourceAmount(WireModel):
    id: str
    amount: float


class JobPayment(WireModel):
    """How an escrow-paid job is paid: the lock, then its claim (the cost) or its cancellation."""

    chain_id: int = Field(alias="chainId")
    token: str
    lock_tx: str | None = Field(None, alias="lockTx")
    claim_tx: str | None = Field(None, alias="claimTx")
    cancel_tx: str | None = Field(None, alias="cancelTx")
    cost: str = Field("0", description="what was claimed, in the token's smallest unit")


class ComputeStatus(WireModel):
    """A job as Ocean's legacy status object. Dates are unix times as strings (6 decimals); ``results`` is
    ``""`` until there are results; ``resultsDid`` only once the results were published as an asset."""

    agreement_id: str = Field(alias="agreementId")
    job_id: str = Field(alias="jobId")
    owner: str
    status: int
    status_text: str = Field(alias="statusText")
    date_created: str | None = Field(alias="dateCreated")
    date_finished: str | None = Field(alias="dateFinished")
    results: list[ResultFile] | Literal[""]
    stopreq: int
    removed: int
    algo_did: str = Field(alias="algoDID")
    input_did: list[str] = Field(alias="inputDID")
    did: str | None
    environment: str
    expire_timestamp: str | None = Field(alias="expireTimestamp")
    results_did: str | None = Field(None, alias="resultsDid")
    # jobs started through ocean-node's protocol (ocean.js) only:
    resources: list[ResourceAmount] | None = None
    is_free: bool | None = Field(None, alias="isFree")
    max_job_duration: int | None = Field(None, alias="maxJobDuration")
    payment: JobPayment | None = None
    metadata: JsonObject | None = None

    def wire(self) -> JsonObject:
        """The JSON object as the routes write it (``resultsDid`` left out unless set)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class ComputeEnvironmentInfo(WireModel):
    """A compute environment as ocean.py reads it (``priceMin``: fee tokens per minute)."""

    id: str
    cpu_number: float = Field(alias="cpuNumber")
    cpu_type: str = Field(alias="cpuType")
    gpu_number: int = Field(alias="gpuNumber")
    gpu_type: str = Field(alias="gpuType")
    ram_gb: float = Field(alias="ramGB")
    disk_gb: float = Field(alias="diskGB")
    price_min: float = Field(alias="priceMin")
    desc: str
    current_jobs: int = Field(alias="currentJobs")
    max_jobs: int = Field(alias="maxJobs")
    consumer_address: str = Field(alias="consumerAddress")
    storage_expiry: int = Field(alias="storageExpiry")
    max_job_duration: int = Field(alias="maxJobDuration")
    last_seen: str = Field(alias="lastSeen")
    fee_token: str = Field(alias="feeToken")
    pipeline: list[str]


class ResourceInfo(WireModel):
    """One resource of an environment (ocean-node): per job ``min``..``max``, ``total`` for all jobs, ``inUse`` by
    the running ones."""

    id: str
    type: str
    min: float
    max: float
    total: float
    in_use: float = Field(alias="inUse")


class GpuResourceInfo(ResourceInfo):
    """The GPUs of an environment: a resource with the model as ``description`` (ocean-node's GPU resources carry
    one; its cpu, ram and disk do not)."""

    description: str


class ResourcePrice(WireModel):
    id: str
    price: float = Field(description="fee tokens per unit per started minute")


class FeeTerms(WireModel):
    fee_token: str = Field(alias="feeToken")
    prices: list[ResourcePrice]


class FreeResource(WireModel):
    id: str
    max: float
    min: float
    total: float


class FreeTierInfo(WireModel):
    max_job_duration: int = Field(alias="maxJobDuration")
    max_jobs: int = Field(alias="maxJobs")
    resources: list[FreeResource]
    storage_expiry: int = Field(alias="storageExpiry")


class Platform(WireModel):
    architecture: str
    os: str


class NodeEnvironmentInfo(WireModel):
    """A compute environment as ocean-node describes it (``GET /computeEnvironments`` without ``chainId``):
    ``fees`` by chain id, ``resources`` in the order cpu, ram, disk (then gpu where it has GPUs), a ``free`` block
    when it takes free jobs."""

    id: str
    description: str
    consumer_address: str = Field(alias="consumerAddress")
    storage_expiry: int = Field(alias="storageExpiry")
    min_job_duration: int = Field(alias="minJobDuration")
    max_job_duration: int = Field(alias="maxJobDuration")
    max_jobs: int = Field(alias="maxJobs")
    running_jobs: int = Field(alias="runningJobs")
    running_free_jobs: int = Field(alias="runningfreeJobs")
    queued_jobs: int = Field(0, alias="queuedJobs")
    queued_free_jobs: int = Field(0, alias="queuedFreeJobs")
    fees: dict[str, list[FeeTerms]]
    resources: list[GpuResourceInfo | ResourceInfo]
    free: FreeTierInfo | None = None
    platform: Platform


# -- Aquarius ----------------------------------------------------------------------------------------
class AquariusInfo(WireModel):
    software: str
    version: str
    implementation: str


class AquariusQuery(RequestModel):
    """An Elasticsearch-style search, as far as it is understood here: ``size`` (at most 1000), ``from`` and
    the text of a ``query_string``, ``match``, ``term`` or ``match_phrase`` query."""

    size: IntLike = 100
    from_: IntLike = Field(0, alias="from")
    query: OrEmpty[JsonObject] = None


class HitCount(WireModel):
    value: int


class SearchHit(WireModel):
    source: Ddo = Field(alias="_source")


class SearchHits(WireModel):
    total: HitCount
    hits: list[SearchHit]


class QueryResponse(WireModel):
    hits: SearchHits


class ValidatorProof(WireModel):
    """The provider's signature over the DDO's hash, the validator proof ``setMetaData`` checks."""

    hash: str
    public_key: str = Field(alias="publicKey")
    r: list[str]
    s: list[str]
    v: int
