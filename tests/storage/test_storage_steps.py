"""input-fetch and output-publish against real MinIO (S3) and Kubo (IPFS) servers."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from c2d.exceptions import StorageError, TransientStorageError
from c2d.storage.ipfs import Kubo
from c2d.storage.locations import parse_ipfs, parse_s3
from c2d.storage.s3 import S3Store

from .conftest import (
    INPUT,
    CuttingProxy,
    KuboServer,
    MinioServer,
    fetch_spec,
    listed,
    outputs,
    run_fetch,
    run_publish,
    s3_env,
)


def put_object(s3: S3Store, url: str, body: bytes) -> None:
    """Store ``body`` at ``url`` (s3://bucket/key) in the test MinIO."""
    assert s3.upload(parse_s3(url), io.BytesIO(body), len(body)) == len(body)


def test_fetch_from_s3(tmp_path: Path, minio_server: MinioServer, s3: S3Store, bucket: str) -> None:
    body = bytes(range(256)) * 4096  # 1 MiB, several chunks
    put_object(s3, f"s3://{bucket}/data/set.bin", body)
    spec = fetch_spec(f"s3://{bucket}/data/set.bin", max_bytes=2 << 20, s3_endpoint=minio_server.endpoint)
    spec.datasets[0].files[0].checksum = hashlib.sha256(body).hexdigest()
    done = run_fetch(tmp_path / "data", spec, s3_env(minio_server))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / INPUT).read_bytes() == body
    assert "size and sha256 verified" in done.stderr and bucket not in done.stderr


def test_fetch_from_s3_failures(tmp_path: Path, minio_server: MinioServer, s3: S3Store, bucket: str) -> None:
    put_object(s3, f"s3://{bucket}/big.bin", b"x" * 5000)
    endpoint = minio_server.endpoint
    cases = [
        (f"s3://{bucket}/big.bin", s3_env(minio_server, secret_key="not-the-secret"), "refused our credentials"),
        (f"s3://{bucket}/missing.bin", s3_env(minio_server), "NoSuchKey"),
        ("s3://no-such-bucket-here/x", s3_env(minio_server), "NoSuchBucket"),
        (f"s3://{bucket}/big.bin", s3_env(minio_server), "over the 4096 bytes left for inputs"),
        (f"s3://{bucket}/big.bin", {}, "s3:// files are not enabled on this node"),
    ]
    for index, (url, env, expected) in enumerate(cases):
        data = tmp_path / str(index)
        done = run_fetch(data, fetch_spec(url, max_bytes=4096, s3_endpoint=endpoint), env)
        assert done.returncode == 31, (expected, done.stderr)
        assert expected in done.stderr, (expected, done.stderr)
        assert list((data / INPUT.parent).iterdir()) == []  # no partial file


def test_fetch_from_ipfs(tmp_path: Path, kubo_server: KuboServer, kubo: Kubo) -> None:
    source = tmp_path / "set.csv"
    source.write_bytes(b"a,b\n" * 3000)
    with source.open("rb") as handle:
        location, added = kubo.add(handle)
    assert added == source.stat().st_size
    done = run_fetch(tmp_path / "ok", fetch_spec(location.url, ipfs_api=kubo_server.api_url))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "ok" / INPUT).read_bytes() == source.read_bytes()
    # Ocean's own ipfs file type ends up as the same location (provider side), so only URLs here.
    missing = "ipfs://bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    for index, (url, max_bytes, access, expected) in enumerate(
        [
            (missing, 1 << 20, {"ipfs_api": kubo_server.api_url}, "not found"),
            (location.url, 1000, {"ipfs_api": kubo_server.api_url}, "exceeds the 1000 bytes left for inputs"),
            ("ipfs://not-a-cid", 1 << 20, {"ipfs_api": kubo_server.api_url}, "invalid IPFS CID"),
            (location.url, 1 << 20, {}, "ipfs:// files are not enabled on this node"),
        ]
    ):
        data = tmp_path / str(index)
        done = run_fetch(data, fetch_spec(url, max_bytes, **access))
        assert done.returncode == 31, (expected, done.stderr)
        assert expected in done.stderr, (expected, done.stderr)
        assert list((data / INPUT.parent).iterdir()) == []


def test_publish_to_s3(tmp_path: Path, minio_server: MinioServer, s3: S3Store, bucket: str) -> None:
    data = tmp_path / "data"
    big = bytes(range(256)) * (80 * 1024)  # 20 MiB: a multipart upload (16 MiB parts)
    outputs(data, {"result.csv": b"1,2\n", "deep/model.bin": big, "bad\x01name.txt": b"refused by S3"})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = run_publish(data, f"s3://{bucket}/job1", s3_env(minio_server) | {"TMPDIR": str(tmp)})
    assert done.returncode == 0, done.stderr
    assert list(tmp.iterdir()) == []  # the result list went up from a private folder, removed since
    results = listed(data)
    assert [(r["filename"], r["url"]) for r in results] == [  # depth-first, sorted by name
        ("deep/model.bin", f"s3://{bucket}/job1/outputs/deep/model.bin"),
        ("result.csv", f"s3://{bucket}/job1/outputs/result.csv"),
        ("algorithm.log", f"s3://{bucket}/job1/logs/algorithm.log"),
        ("publish.log", f"s3://{bucket}/job1/logs/publish.log"),
    ]
    assert b"".join(s3.stream(parse_s3(str(results[0]["url"])))) == big
    assert results[0]["filesize"] == len(big)
    # A name S3 refuses (a control character) is skipped with its line; the rest went up.
    assert "cannot store outputs/bad\\x01name.txt: invalid S3 object key: skipped" in done.stderr
    assert b"".join(s3.stream(parse_s3(f"s3://{bucket}/job1/results.json"))).startswith(b"[")


def test_interrupted_s3_upload_is_retried_and_lists_nothing_partial(
    tmp_path: Path, minio_server: MinioServer, s3: S3Store, bucket: str, cutting_proxy: CuttingProxy
) -> None:
    data = tmp_path / "data"
    outputs(data, {"a.bin": b"a" * 300_000, "b.bin": b"b" * 300_000})
    env = s3_env(minio_server, endpoint=cutting_proxy.url)
    # The store goes away for good: the step gives up with the transient code, nothing is listed.
    cutting_proxy.down.set()
    done = run_publish(data, f"s3://{bucket}/job2", env)
    assert done.returncode == 75, done.stderr
    assert not (data / "results.json").exists()
    assert not list(s3.client.list_objects(bucket, prefix="job2/", recursive=True))
    # Connections cut in the middle of an upload: retried, and the result list is complete.
    cutting_proxy.down.clear()
    cutting_proxy.cut_after, cutting_proxy.cuts = 100_000, 2
    done = run_publish(data, f"s3://{bucket}/job2", env)
    assert done.returncode == 0, done.stderr
    assert cutting_proxy.cut_count == 2
    assert [r["filename"] for r in listed(data)] == ["a.bin", "b.bin", "algorithm.log", "publish.log"]
    assert b"".join(s3.stream(parse_s3(f"s3://{bucket}/job2/outputs/b.bin"))) == b"b" * 300_000


def test_publish_to_ipfs(tmp_path: Path, kubo_server: KuboServer, kubo: Kubo) -> None:
    data = tmp_path / "data"
    outputs(data, {"result.txt": b"forty-two\n"})
    done = run_publish(data, "ipfs", {"C2D_IPFS_API": kubo_server.api_url})
    assert done.returncode == 0, done.stderr
    first = listed(data)[0]
    assert first["filename"] == "result.txt" and str(first["url"]).startswith("ipfs://")
    assert first["cid"] == parse_ipfs(str(first["url"])).cid
    assert b"".join(kubo.cat(parse_ipfs(str(first["url"])))) == b"forty-two\n"
    # The IPFS node is gone: transient failure, nothing listed.
    data2 = tmp_path / "data2"
    outputs(data2, {"x.txt": b"x"})
    done = run_publish(data2, "ipfs", {"C2D_IPFS_API": "http://127.0.0.1:9"})
    assert done.returncode == 75 and not (data2 / "results.json").exists()


def test_an_upload_whose_source_ends_early_is_refused_not_retried(s3: S3Store, bucket: str) -> None:
    location = parse_s3(f"s3://{bucket}/short.bin")
    with pytest.raises(StorageError, match="the source ended after 3 of 10 bytes") as raised:
        s3.upload(location, io.BytesIO(b"abc"), 10)
    assert not isinstance(raised.value, TransientStorageError)
    assert not list(s3.client.list_objects(bucket, prefix="short.bin"))
    # A source longer than the size given: exactly ``size`` bytes are stored.
    s3.upload(location, io.BytesIO(b"abcdef"), 4)
    assert b"".join(s3.stream(location)) == b"abcd"
