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
    """Who the provider is and where every endpoint lives (ocean.py discovers URLs from this map)."""

    software: str
    version: str
    implementation: str
    provider_addresses: dict[str, str] = Field(alias="providerAddresses", description="chain id -> address")
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


class InitializeComputeRequest(RequestModel):
    """initializeCompute: which orders are still valid and which provider fees to pay."""

    datasets: list[ComputeInput] | None = None
    algorithm: OrEmpty[ComputeAlgorithm] = None
    compute: OrEmpty[ComputeParams] = None
    consumer_address: str | None = Field(None, alias="consumerAddress")


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


class ComputeStartRequest(RequestModel):
    """POST /compute: start a job on paid orders; signed over consumer + ``dataset.documentId``, then the
    nonce."""

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


# -- the compute jobs ------------------------------------------------------------------------------
class ResultFile(WireModel):
    """One result of a job, as clients see it (its index is its position; never where it is stored)."""

    filename: str | None = None
    filesize: int | None = None
    type: str | None = Field(None, description="output, algorithmLog, configurationLog, publishLog")


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
