"""The node with real MinIO and Kubo: datasets from allow-listed buckets and IPFS, results stored there,
served through computeResult, deleted by DELETE /compute and by the retention sweep."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from pydantic import SecretStr

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.chain.signing import sign_message
from c2d.db.jobs import JobRecord, JobStore
from c2d.db.pool import Pool
from c2d.environments import ComputeEnvironment
from c2d.settings import IpfsSettings, S3Settings, Settings
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from c2d.storage.ipfs import Kubo
from c2d.storage.s3 import S3Config, S3Store
from provider.app import create_app
from provider.result_assets import ResultAssets
from provider.results import ResultStore
from provider.retention import Retention
from tests.fileserver import FileServer
from tests.helpers import fresh_nonce
from tests.provider.market import Market, open_market
from workflows.local.engine import LocalEngine

from .conftest import KuboServer, MinioServer, put_object

RESULTS = "c2d-results-test"
OPEN_BUCKET = "open-data"
OWNED_BUCKET = "owned-data"
ALGORITHM = b"""import os, json
rows = open(f"/data/inputs/{json.loads(os.environ['DIDS'])[0]}/0").read().split()
open("/data/outputs/count.txt", "w").write(str(len(rows)))
"""


def _environment(env_id: str, storage: str | None) -> ComputeEnvironment:
    return ComputeEnvironment(
        id=env_id, ram_gb=0.25, disk_gb=0.05, max_job_duration=20, step_timeout=30, pids=64, storage=storage
    )


@pytest.fixture(scope="module")
def storage_settings(
    stack: Stack, minio_server: MinioServer, kubo_server: KuboServer, s3: S3Store, publisher: LocalAccount
) -> Settings:
    s3_settings = S3Settings(
        endpoint=minio_server.endpoint,
        access_key=SecretStr(minio_server.access_key),
        secret_key=SecretStr(minio_server.secret_key),
        results_bucket=RESULTS,
        input_buckets={OPEN_BUCKET: ["*"], OWNED_BUCKET: ["0x" + "11" * 20]},
    )
    for bucket in (RESULTS, OPEN_BUCKET, OWNED_BUCKET):
        s3.ensure_bucket(bucket)
    storage = stack.settings.storage.model_copy(
        update={"s3": s3_settings, "ipfs": IpfsSettings(api_url=kubo_server.api_url, timeout=5)}
    )
    envs = [_environment("local-cpu", None), _environment("s3-env", "s3"), _environment("ipfs-env", "ipfs")]
    return stack.settings.model_copy(update={"storage": storage, "environments": envs})


@pytest.fixture(scope="module")
def s3(minio_server: MinioServer) -> S3Store:
    return S3Store(S3Config(minio_server.endpoint, minio_server.access_key, minio_server.secret_key))


@pytest.fixture(scope="module")
def storage_engine(storage_settings: Settings, pool: Pool) -> Iterator[LocalEngine]:
    with LocalEngine(storage_settings, pool, database_dsn(storage_settings)) as engine:
        yield engine


@pytest.fixture
def storage_client(storage_settings: Settings, pool: Pool, storage_engine: LocalEngine) -> Iterator[TestClient]:
    with TestClient(create_app(storage_settings, pool, storage_engine)) as client:
        yield client


@pytest.fixture
def market(
    storage_client: TestClient,
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    provider_account: LocalAccount,
    pool: Pool,
    file_server: FileServer,
) -> Market:
    return open_market(storage_client, chain, addresses, publisher, provider_account, pool, file_server)


def _signed(account: LocalAccount, message: str) -> dict[str, str]:
    nonce = fresh_nonce()
    return {"nonce": nonce, "signature": sign_message(account.key.hex(), message + nonce)}


def _run(market: Market, consumer: LocalAccount, env: str, file_objects: list[dict[str, Any]]) -> Any:
    """Publish a trusted algorithm and a dataset with ``file_objects``, buy both, start: the POST response."""
    return _start(market, consumer, env, file_objects, None)[0]


def _wait(store: JobStore, job_id: str) -> JobRecord:
    end = time.monotonic() + 90
    while time.monotonic() < end:
        job = store.get(job_id)
        assert job is not None
        if job.finished:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {store.get(job_id)}")


def _result(client: httpx.Client, consumer: LocalAccount, job_id: str, index: int) -> Any:
    query = {"consumerAddress": consumer.address, "jobId": job_id, "index": str(index)}
    return client.get(
        "/api/services/computeResult", params=query | _signed(consumer, f"{consumer.address}{job_id}{index}")
    )


def _objects(s3: S3Store, bucket: str, prefix: str) -> list[str]:
    return [str(obj.object_name) for obj in s3.client.list_objects(bucket, prefix=prefix, recursive=True)]


def test_s3_dataset_to_s3_results_then_deleted(
    market: Market, consumer: LocalAccount, s3: S3Store, pool: Pool, tmp_path: Path
) -> None:
    put_object(s3, f"s3://{OPEN_BUCKET}/rows.txt", b"a\nb\nc\n", tmp_path)
    response = _run(market, consumer, "s3-env", [{"type": "s3", "bucket": OPEN_BUCKET, "objectKey": "rows.txt"}])
    assert response.status_code == 200, response.text
    job_id = response.json()[0]["jobId"]
    job = _wait(JobStore(pool), job_id)
    assert (job.status, job.status_text) == (70, "Job finished"), job.details
    results = job.results or []
    assert results[0]["url"] == f"s3://{RESULTS}/{job_id}/outputs/count.txt"
    assert f"{job_id}/results.json" in _objects(s3, RESULTS, f"{job_id}/")
    # The consumer downloads through the node; the status never shows where results are stored.
    assert _result(market.client, consumer, job_id, 0).content == b"3"
    (status,) = market.client.get(
        "/api/services/compute", params={"consumerAddress": consumer.address, "jobId": job_id}
    ).json()
    assert "url" not in status["results"][0] and RESULTS not in str(status)
    # DELETE removes the objects, then marks the job removed.
    query = {"consumerAddress": consumer.address, "jobId": job_id}
    (status,) = market.client.delete(
        "/api/services/compute", params=query | _signed(consumer, f"{consumer.address}{job_id}")
    ).json()
    assert status["removed"] == 1 and _objects(s3, RESULTS, f"{job_id}/") == []
    assert _result(market.client, consumer, job_id, 0).status_code == 404


def test_buckets_are_open_only_to_allowed_publishers(market: Market, consumer: LocalAccount) -> None:
    for file_object, code in (
        ({"type": "s3", "bucket": OWNED_BUCKET, "objectKey": "x.csv"}, "s3_bucket_not_allowed"),  # another publisher
        ({"type": "url", "url": f"s3://{RESULTS}/somejob/outputs/x"}, "s3_bucket_not_allowed"),  # other jobs' results
        ({"type": "s3", "bucket": "private", "objectKey": "x"}, "s3_bucket_not_allowed"),  # not listed at all
        (
            {"type": "s3", "bucket": OPEN_BUCKET, "objectKey": "x", "s3Access": {"accessKeyId": "a"}},
            "credentials_in_ddo",
        ),
    ):
        response = _run(market, consumer, "s3-env", [file_object])
        assert response.status_code == 400, response.text
        assert response.json()["error"] == {"dataset.serviceId": code}


def test_ipfs_dataset_to_ipfs_results(
    market: Market, consumer: LocalAccount, kubo_server: KuboServer, pool: Pool, tmp_path: Path
) -> None:
    kubo = Kubo(kubo_server.api_url)
    source = tmp_path / "rows.txt"
    source.write_bytes(b"1\n2\n3\n4\n")
    with source.open("rb") as handle:
        location, _ = kubo.add(handle)
    response = _run(market, consumer, "ipfs-env", [{"type": "ipfs", "hash": location.cid}])
    assert response.status_code == 200, response.text
    job_id = response.json()[0]["jobId"]
    job = _wait(JobStore(pool), job_id)
    assert job.status == 70, job.details
    first = (job.results or [])[0]
    assert first["filename"] == "count.txt" and str(first["url"]).startswith("ipfs://") and first["cid"]
    response = _result(market.client, consumer, job_id, 0)
    assert response.status_code == 200 and response.content == b"4"


def test_retention_removes_expired_results(
    market: Market, consumer: LocalAccount, storage_settings: Settings, s3: S3Store, pool: Pool, tmp_path: Path
) -> None:
    put_object(s3, f"s3://{OPEN_BUCKET}/expiring.txt", b"x\n", tmp_path)
    response = _run(market, consumer, "s3-env", [{"type": "url", "url": f"s3://{OPEN_BUCKET}/expiring.txt"}])
    job_id = response.json()[0]["jobId"]
    store = JobStore(pool)
    job = _wait(store, job_id)
    assert job.status == 70 and job.expiry is not None and job.date_finished is not None
    # Kept for the environment's storage expiry, counted from the end of the job.
    expected = storage_settings.environment("s3-env").storage_expiry  # type: ignore[union-attr]
    assert abs((job.expiry - job.date_finished).total_seconds() - expected) < 5
    retention = Retention(store, ResultStore(storage_settings), interval=60)
    retention.sweep()
    assert store.get(job_id).removed == 0  # type: ignore[union-attr]  # not expired yet
    with pool.connection() as conn:
        conn.execute("UPDATE jobs SET expiry = clock_timestamp() - interval '1 second' WHERE job_id = %s", (job_id,))
    assert retention.sweep() >= 1
    removed = store.get(job_id)
    assert removed is not None and removed.removed == 1 and _objects(s3, RESULTS, f"{job_id}/") == []
    assert store.events(job_id)[-1].detail == {"removed": "storage expiry passed"}
    assert _result(market.client, consumer, job_id, 0).status_code == 404


def _start(market: Market, consumer: LocalAccount, env: str, objects: list[dict[str, Any]], output: object) -> Any:
    market.env = env
    algorithm = market.publish("algorithm", ALGORITHM)
    trust = {"did": algorithm.did, "filesChecksum": hashlib.sha256(ALGORITHM).hexdigest()}
    compute = {"allowRawAlgorithm": False, "publisherTrustedAlgorithms": [trust]}
    dataset = market.publish("dataset", b"", file_objects=objects, compute=compute)
    data_tx, algo_tx = market.buy(consumer, dataset, algorithm)
    body = market.start_body(consumer, dataset, data_tx, algorithm, algo_tx) | {"output": output}
    return market.client.post("/api/services/compute", json=body), dataset


def test_results_published_as_a_new_asset_owned_by_the_consumer(
    market: Market, consumer: LocalAccount, s3: S3Store, pool: Pool, tmp_path: Path
) -> None:
    put_object(s3, f"s3://{OPEN_BUCKET}/to-publish.txt", b"a\nb\n", tmp_path)
    objects = [{"type": "s3", "bucket": OPEN_BUCKET, "objectKey": "to-publish.txt"}]
    output = '{"publishOutput": 1, "metadata": {"name": "row count"}}'  # ocean.py sends a JSON string
    response, dataset = _start(market, consumer, "s3-env", objects, output)
    assert response.status_code == 200, response.text
    job_id = response.json()[0]["jobId"]
    store = JobStore(pool)
    assert _wait(store, job_id).status == 70
    services = market.client.app.state.services  # type: ignore[attr-defined]
    assert ResultAssets(services).run_once() == 1
    assert ResultAssets(services).run_once() == 0  # published once
    job = store.get(job_id)
    assert job is not None
    asset = job.details["resultAsset"]
    assert asset["owner"] == consumer.address and job.expiry is None  # kept as long as the asset
    market.indexer.run_once()
    ddo = market.client.get(f"/api/aquarius/assets/ddo/{asset['did']}").json()
    assert ddo["metadata"]["name"] == "row count" and ddo["nft"]["owner"] == consumer.address
    assert ddo["services"][0]["type"] == "compute"
    trusted = ddo["services"][0]["compute"]["publisherTrustedAlgorithms"]
    assert trusted == services.ddos.get(dataset.did)["services"][0]["compute"]["publisherTrustedAlgorithms"]
    query = {"consumerAddress": consumer.address, "jobId": job_id}
    (status,) = market.client.get("/api/services/compute", params=query).json()
    assert "resultsDid" not in status  # ocean.js asks unsigned: what ocean-node shows, no result destination
    signed = query | _signed(consumer, f"{consumer.address}{job_id}")  # as ocean.py asks (no documentId here)
    (status,) = market.client.get("/api/services/compute", params=signed).json()
    assert status["resultsDid"] == asset["did"]
    # The new asset reads exactly its job's results from the results bucket (fileinfo proves it).
    info = market.client.post(
        "/api/services/fileinfo", json={"did": asset["did"], "serviceId": "svc-0", "checksum": True}
    ).json()
    assert info[0]["valid"] is True and info[0]["checksum"] == hashlib.sha256(b"2").hexdigest()


def test_publish_output_refusals(market: Market, consumer: LocalAccount, file_server: FileServer) -> None:
    file_server.files["/publish.csv"] = b"x\n"
    objects = [{"type": "url", "url": f"{file_server.url}/publish.csv"}]
    response, _ = _start(market, consumer, "local-cpu", objects, {"publishOutput": True})
    assert response.status_code == 400
    assert response.json()["error"] == {"output": "publish_output_not_supported"}
    response, _ = _start(market, consumer, "s3-env", objects, "{not json")
    assert response.status_code == 400 and response.json()["error"] == {"output": "invalid"}


def test_results_by_short_lived_presigned_url(
    market: Market, consumer: LocalAccount, storage_settings: Settings, s3: S3Store, pool: Pool, tmp_path: Path
) -> None:
    put_object(s3, f"s3://{OPEN_BUCKET}/presign.txt", b"p\nq\nr\ns\nt\n", tmp_path)
    response = _run(market, consumer, "s3-env", [{"type": "s3", "bucket": OPEN_BUCKET, "objectKey": "presign.txt"}])
    job_id = response.json()[0]["jobId"]
    assert _wait(JobStore(pool), job_id).status == 70
    s3_settings = storage_settings.storage.s3.model_copy(update={"presign_results": True, "presign_seconds": 60})
    presigning = storage_settings.model_copy(
        update={"storage": storage_settings.storage.model_copy(update={"s3": s3_settings})}
    )
    with TestClient(create_app(presigning, pool, None), follow_redirects=False) as client:
        answer = _result(client, consumer, job_id, 0)
        assert answer.status_code == 307, answer.text
        url = answer.headers["location"]
        assert "X-Amz-Expires=60" in url and "X-Amz-Signature=" in url
        assert httpx.get(url).content == b"5"  # the store serves it to whoever holds the link, for 60 s
        unsigned = url.split("?", 1)[0]
        assert httpx.get(unsigned).status_code == 403  # the bucket itself is not public
