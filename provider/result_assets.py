"""Results published as a new Ocean asset, when the job asked for it (``output.publishOutput``).

After the job ends with status 70, the node (its provider wallet) creates a data NFT with one
datatoken, publishes a DDO whose single ``compute`` service holds the job's outputs (S3 objects or
IPFS CIDs, encrypted to this provider: the results stay here, like the data they came from) with the
trusted-algorithm rules of the job's main dataset, and hands the NFT to the consumer
(``C2D_STORAGE__RESULT_ASSET_OWNER=consumer``, the default) or keeps it (``provider``). Each step is
recorded in ``jobs.details.resultAsset`` before the next, so a restart resumes instead of minting a
second NFT; a failing chain is retried up to ``MAX_ATTEMPTS`` times, the error kept for operators.
The results of a published job no longer expire (the asset needs them).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from web3.exceptions import Web3Exception

from c2d.chain.deploy import read_address_file
from c2d.chain.documents import encrypt
from c2d.chain.transactions import DataAsset, create_data_nft, publish_ddo, transfer_nft
from c2d.db.job_records import OutputRequest, ResultAssetState, ResultEntry
from c2d.db.jobs import JobRecord
from c2d.exceptions import C2DError, ChainError
from c2d.storage.locations import parse_ipfs, parse_s3
from provider.periodic import Periodic
from provider.publishing import make_ddo
from provider.services import Services

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
TRUST_KEYS = ("allowRawAlgorithm", "publisherTrustedAlgorithms", "publisherTrustedAlgorithmPublishers")


def output_request(raw: object) -> OutputRequest | None:
    """The ``output`` of a start request (a dict or a JSON string) as stored with the job; None if it asks
    for nothing. Raises ValueError when it is not an object."""
    if raw in (None, "", {}):
        return None
    value = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(value, dict):
        raise ValueError("output must be a JSON object")
    if not _truthy(value.get("publishOutput")):
        return None
    metadata = value.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    return {
        "publishOutput": True,
        "publishAlgorithmLog": _truthy(value.get("publishAlgorithmLog")),
        "name": str(metadata.get("name") or "")[:200],
        "description": str(metadata.get("description") or "")[:2000],
    }


def _truthy(value: object) -> bool:
    return value is True or value == 1 or (isinstance(value, str) and value.lower() in ("1", "true", "yes"))


def _file_object(entry: ResultEntry) -> dict[str, Any]:
    url = str(entry.get("url") or "")
    if url.startswith("s3://"):
        location = parse_s3(url)
        return {"type": "s3", "bucket": location.bucket, "objectKey": location.key}
    return {"type": "ipfs", "hash": parse_ipfs(url).cid}


class ResultAssets(Periodic):
    name = "result-assets"
    done_message = "published the results of %d job(s) as new assets"

    def __init__(self, services: Services, interval: float = 2.0) -> None:
        super().__init__(interval)
        self.services = services

    def run_once(self) -> int:
        """Publish what is due; returns how many assets were published."""
        published = 0
        for job in self.services.jobs.awaiting_publication(MAX_ATTEMPTS):
            state = ResultAssetState(**job.details.get("resultAsset", {}))
            try:
                self._publish(job, state)
                published += 1
            except (C2DError, Web3Exception, ValueError) as exc:
                state.update({"attempts": state.get("attempts", 0) + 1, "error": str(exc)[:500]})
                self._record(job, state)
                log.warning("job %s: publishing its results as an asset failed: %s", job.job_id, exc)
        return published

    def _record(self, job: JobRecord, state: ResultAssetState) -> None:
        self.services.jobs.update_details(job.job_id, {"resultAsset": state})

    def _publish(self, job: JobRecord, state: ResultAssetState) -> None:
        request = job.details.get("output")
        kinds = ("output", "algorithmLog") if request and request["publishAlgorithmLog"] else ("output",)
        files = [_file_object(e) for e in job.results or [] if e.get("type") in kinds and e.get("url")]
        if not files:
            raise ValueError("the job stored no outputs in S3 or IPFS to publish")
        services = self.services
        provider = services.account
        if "nft" not in state:
            addresses = read_address_file(services.settings.address_file)
            if addresses is None:
                raise ChainError(f"no Ocean contract addresses in {services.settings.address_file}")
            symbol = f"R{job.job_id[:7].upper()}"
            asset = create_data_nft(services.chain, addresses, provider, f"C2D results {job.job_id[:8]}", symbol)
            state.update({"nft": asset.nft, "datatoken": asset.datatoken})
            self._record(job, state)  # before anything else: a restart must not mint a second NFT
        asset = DataAsset(str(state["nft"]), str(state["datatoken"]), services.chain.chain_id)
        if "did" not in state:
            document = {"datatokenAddress": asset.datatoken, "nftAddress": asset.nft, "files": files}
            encrypted = "0x" + encrypt(json.dumps(document).encode(), services.public_key).hex()
            ddo = make_ddo(
                asset,
                services.settings.provider_url,
                encrypted,
                compute=self._trust(job),
                name=(request and request["name"]) or f"Results of compute job {job.job_id}",
                description=(request and request["description"])
                or f"Outputs of compute job {job.job_id} on {job.did}, algorithm {job.algo_did}.",
                author=f"C2D node {services.address}",
            )
            publish_ddo(
                services.chain,
                provider,
                asset.nft,
                ddo,
                services.settings.provider_url,
                services.address,
                lambda data: encrypt(data, services.public_key),
            )
            services.jobs.keep_results(job.job_id)
            state.update({"did": asset.did, "owner": services.address})
            state.pop("error", None)
            self._record(job, state)
        if services.settings.storage.result_asset_owner == "consumer" and state.get("owner") != job.owner:
            transfer_nft(services.chain, provider, asset.nft, job.owner)
            state["owner"] = job.owner
            self._record(job, state)

    def _trust(self, job: JobRecord) -> dict[str, Any]:
        """The main dataset's trusted-algorithm rules: what may run on its data may run on its results."""
        ddo = self.services.ddos.get(job.did or "") or {}
        services: list[dict[str, Any]] = list(ddo.get("services") or [])
        service = next((s for s in services if s.get("type") == "compute"), {})
        compute = dict(service.get("compute") or {})
        return {key: compute.get(key, [] if key != "allowRawAlgorithm" else False) for key in TRUST_KEYS}
