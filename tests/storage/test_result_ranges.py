"""computeResult honours a byte range (``Range: bytes=...``, how ocean.js resumes a download) for results in
MinIO and Kubo as FileResponse does for the local store: 206 with Content-Range, 416 past the end."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Iterator

import httpx
import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from pydantic import SecretStr

from c2d.chain.signing import sign_message
from c2d.db.job_records import ResultEntry
from c2d.db.jobs import JobStore, NewJob
from c2d.db.pool import Pool
from c2d.settings import IpfsSettings, S3Settings, Settings
from c2d.stack.stack import Stack
from c2d.storage.ipfs import Kubo
from c2d.storage.locations import parse_s3
from c2d.storage.s3 import CHUNK, S3Config, S3Store
from provider.app import create_app
from tests.helpers import fresh_nonce

from .conftest import KuboServer, MinioServer

RESULTS = "c2d-ranges-test"
BODY = os.urandom(2 * CHUNK + 1000)  # more than one chunk of either store
SIZE = len(BODY)


@pytest.fixture(scope="module")
def range_settings(stack: Stack, minio_server: MinioServer, kubo_server: KuboServer) -> Settings:
    s3 = S3Settings(
        endpoint=minio_server.endpoint,
        access_key=SecretStr(minio_server.access_key),
        secret_key=SecretStr(minio_server.secret_key),
        results_bucket=RESULTS,
    )
    storage = stack.settings.storage.model_copy(update={"s3": s3, "ipfs": IpfsSettings(api_url=kubo_server.api_url)})
    return stack.settings.model_copy(update={"storage": storage})


@pytest.fixture(scope="module")
def job(
    range_settings: Settings, pool: Pool, consumer: LocalAccount, minio_server: MinioServer, kubo_server: KuboServer
) -> str:
    """A finished job of ``consumer`` with the same file as result 0 in the local store, 1 in S3, 2 in IPFS, and
    an empty file as result 3 in S3."""
    s3 = S3Store(S3Config(minio_server.endpoint, minio_server.access_key, minio_server.secret_key))
    kubo = Kubo(kubo_server.api_url)
    job_id = secrets.token_hex(16)
    JobStore(pool).create(NewJob(job_id=job_id, owner=consumer.address, environment="e", engine="none"))
    local = range_settings.store_dir / job_id / "outputs" / "big.bin"
    local.parent.mkdir(parents=True)
    local.write_bytes(BODY)
    s3.ensure_bucket(RESULTS)
    for key, body in (("big.bin", BODY), ("empty.bin", b"")):
        s3.upload(parse_s3(f"s3://{RESULTS}/{job_id}/outputs/{key}"), io.BytesIO(body), len(body))
    ipfs, _ = kubo.add(io.BytesIO(BODY))
    results: list[ResultEntry] = [
        {"filename": "big.bin", "filesize": SIZE, "type": "output", "path": "outputs/big.bin"},
        {"filename": "big.bin", "filesize": SIZE, "type": "output", "url": f"s3://{RESULTS}/{job_id}/outputs/big.bin"},
        {"filename": "big.bin", "filesize": SIZE, "type": "output", "url": ipfs.url, "cid": ipfs.cid},
        {"filename": "empty.bin", "filesize": 0, "type": "output", "url": f"s3://{RESULTS}/{job_id}/outputs/empty.bin"},
    ]
    JobStore(pool).transition(job_id, 70, source="test", finished=True, results=results)
    return job_id


@pytest.fixture
def client(range_settings: Settings, pool: Pool) -> Iterator[TestClient]:
    with TestClient(create_app(range_settings, pool, None)) as test_client:
        yield test_client


def _get(
    client: TestClient, consumer: LocalAccount, job_id: str, index: int, headers: dict[str, str] | None = None
) -> httpx.Response:
    nonce = fresh_nonce()
    signed = {
        "nonce": nonce,
        "signature": sign_message(consumer.key.hex(), f"{consumer.address}{job_id}{index}{nonce}"),
    }
    query = {"consumerAddress": consumer.address, "jobId": job_id, "index": str(index)} | signed
    response: httpx.Response = client.get("/api/services/computeResult", params=query, headers=headers)
    return response


@pytest.mark.parametrize(
    ("asked", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        (f"bytes={CHUNK - 5}-{CHUNK + 4}", CHUNK - 5, CHUNK + 4),  # across a chunk boundary
        (f"bytes={CHUNK + 3}-", CHUNK + 3, SIZE - 1),  # ocean.js resuming at an offset
        ("bytes=-7", SIZE - 7, SIZE - 1),  # the last 7 bytes
        (f"bytes=100-{SIZE + 1000}", 100, SIZE - 1),  # cut at the end
        (f"bytes=-{SIZE + 1}", 0, SIZE - 1),  # a suffix longer than the file: all of it
        (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),
        ("BYTES = 5 - 6", 5, 6),
    ],
)
def test_a_range_of_a_streamed_result(
    client: TestClient, consumer: LocalAccount, job: str, asked: str, start: int, end: int
) -> None:
    local = _get(client, consumer, job, 0, {"range": asked})  # FileResponse: the reference
    for index in (1, 2):  # S3, IPFS
        answer = _get(client, consumer, job, index, {"range": asked})
        assert answer.status_code == 206, (index, answer.text[:200])
        assert answer.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
        assert answer.headers["content-length"] == str(end - start + 1)
        assert answer.content == BODY[start : end + 1]
        assert answer.headers["accept-ranges"] == "bytes"
        assert "big.bin" in answer.headers["content-disposition"]
        assert (local.status_code, local.headers["content-range"], local.content) == (
            answer.status_code,
            answer.headers["content-range"],
            answer.content,
        )


@pytest.mark.parametrize("asked", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"])
def test_a_range_past_the_end_is_416(client: TestClient, consumer: LocalAccount, job: str, asked: str) -> None:
    for index in (0, 1, 2):  # the same as the local store answers
        answer = _get(client, consumer, job, index, {"range": asked})
        assert answer.status_code == 416, (index, answer.text[:200])
        assert answer.headers["content-range"] == f"bytes */{SIZE}" and answer.content == b""
    empty = _get(client, consumer, job, 3, {"range": "bytes=0-"})
    assert (empty.status_code, empty.headers["content-range"]) == (416, "bytes */0")


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no range"),
        ({"range": "bytes=0-1,5-6"}, "several ranges: the whole file is allowed"),
        ({"range": "bytes=9-3"}, "an invalid range is ignored (RFC 9110)"),
        ({"range": "lines=0-3"}, "not bytes"),
        ({"range": "bytes=0-9", "if-range": '"some-etag"'}, "If-Range: nothing to match it with"),
    ],
)
def test_the_whole_streamed_result(
    client: TestClient, consumer: LocalAccount, job: str, headers: dict[str, str], why: str
) -> None:
    for index in (1, 2):
        answer = _get(client, consumer, job, index, headers)
        assert answer.status_code == 200, (why, index)
        assert answer.content == BODY and answer.headers["content-length"] == str(SIZE)
        assert answer.headers["accept-ranges"] == "bytes" and "content-range" not in answer.headers
