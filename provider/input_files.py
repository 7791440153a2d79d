"""Where an asset's files are, as the node may read them: http(s) URLs, allow-listed S3 buckets, IPFS.

Every path that reads a service's files (``POST /compute``, ``fileinfo``, the algorithm's
``filesChecksum``) goes through :func:`input_file`, so the same rules hold everywhere:

* S3 objects only from buckets the operator allow-listed for the asset's publisher (NFT owner)
  (``C2D_STORAGE__S3__INPUT_BUCKETS``), never with credentials taken from the DDO: anyone can
  publish a DDO, the bucket keys are the operator's; of the results bucket, only the prefix of the
  job an asset was published from by this node (:mod:`provider.result_assets`);
* ``ipfs://`` only when the node has an IPFS API;
* http(s) URLs are fetched through the SSRF guard (:mod:`c2d.storage.netguard`).
"""

from __future__ import annotations

from typing import Any

from c2d.settings import Settings
from c2d.storage.locations import LocationError, file_object_url, parse_s3, scheme_of
from c2d.storage.s3 import S3Config
from c2d.storage.sources import SourceConfig, Sources
from provider.exceptions import ComputeRequestError
from workflows.spec import InputFile, StoreAccess

ANY_PUBLISHER = "*"
CREDENTIAL_KEYS = ("s3Access", "accessKeyId", "secretAccessKey", "sessionToken")


def input_file(
    settings: Settings, file: dict[str, Any], publisher: str, resource: str, results_of: str | None = None
) -> InputFile:
    """The file object as the fetch step reads it, or the reason it may not be read here.
    ``results_of``: the job whose results this asset was published from (it may read that job's prefix of
    the results bucket, and nothing else of it)."""
    where = f"{resource}.serviceId"
    if any(key in file for key in CREDENTIAL_KEYS):
        raise ComputeRequestError(
            where, "credentials_in_ddo", "storage credentials in a DDO are not used; the operator allow-lists buckets"
        )
    try:
        url = file_object_url(file)
        scheme = scheme_of(url)
    except LocationError as exc:
        raise ComputeRequestError(where, "unsupported_file_type", str(exc)) from None
    if scheme == "s3":
        location = parse_s3(url)
        own = results_of is not None and location.key.startswith(f"{results_of}/")
        _check_bucket(settings, location.bucket, publisher, where, own_results=own)
    elif scheme == "ipfs" and not settings.storage.ipfs.api_url:
        raise ComputeRequestError(where, "ipfs_not_enabled", "this node has no IPFS API")
    headers = file.get("headers") or {}
    if not isinstance(headers, dict):
        raise ComputeRequestError(where, "invalid_headers", "headers must be an object")
    try:
        return InputFile(
            url=url,
            method=str(file.get("method", "GET")).upper(),
            headers={str(key): str(value) for key, value in headers.items()},
        )
    except ValueError as exc:
        raise ComputeRequestError(where, "invalid_file", str(exc).splitlines()[0]) from None


def _check_bucket(settings: Settings, bucket: str, publisher: str, where: str, *, own_results: bool) -> None:
    s3 = settings.storage.s3
    if not s3.configured:
        raise ComputeRequestError(where, "s3_not_enabled", "this node has no S3 store")
    if bucket == s3.results_bucket and own_results:
        return
    allowed = {entry.lower() for entry in s3.input_buckets.get(bucket, [])}
    if bucket == s3.results_bucket or not (ANY_PUBLISHER in allowed or publisher.lower() in allowed):
        raise ComputeRequestError(
            where, "s3_bucket_not_allowed", f"bucket {bucket!r} is not open to assets of publisher {publisher}"
        )


def store_access(settings: Settings) -> StoreAccess:
    """What the fetch step needs to reach the stores (no credentials: they come from the storage Secret)."""
    storage = settings.storage
    return StoreAccess(
        s3_endpoint=storage.s3.endpoint if storage.s3.configured else None,
        s3_region=storage.s3.region,
        ipfs_api=storage.ipfs.api_url,
        ipfs_timeout=storage.ipfs.timeout,
        allow_hosts=list(settings.fetch.allow_hosts),
    )


def s3_config(settings: Settings) -> S3Config | None:
    s3 = settings.storage.s3
    if not (s3.configured and s3.endpoint and s3.access_key and s3.secret_key):
        return None
    return S3Config(s3.endpoint, s3.access_key.get_secret_value(), s3.secret_key.get_secret_value(), s3.region)


def node_sources(settings: Settings) -> Sources:
    """Sources for the provider's own reads (fileinfo, filesChecksum), under the same SSRF rules."""
    ipfs = settings.storage.ipfs
    config = SourceConfig(tuple(settings.fetch.allow_hosts), s3_config(settings), ipfs.api_url, ipfs.timeout)
    return Sources(config)
