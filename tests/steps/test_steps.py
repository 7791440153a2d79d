"""The step programs run as the engines run them (``python -m steps.*``), against real files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from c2d.storage.http import CHUNK
from steps.exceptions import SpecError
from steps.fetch_plan import parse_fetch_spec
from tests.fileserver import FileServer
from workflows.spec import AlgorithmInput, DatasetInput, FetchSpec, InputFile, StoreAccess

DID = "did:op:" + "cd" * 32


def _fetch(data: Path, spec: FetchSpec) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "C2D_FETCH_SPEC": spec.model_dump_json()}
    return subprocess.run(
        [sys.executable, "-m", "steps.fetch", "--data", str(data)], env=env, capture_output=True, text=True, timeout=60
    )


def _publish(data: Path, target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "steps.publish", "--data", str(data), "--job-id", "x", "--target", str(target), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _spec(url: str, max_bytes: int = 4096, allow: list[str] | None = None) -> FetchSpec:
    return FetchSpec(
        datasets=[DatasetInput(did=DID, files=[InputFile(url=url)])],
        algorithm=AlgorithmInput(raw_code="pass"),
        max_bytes=max_bytes,
        access=StoreAccess(allow_hosts=allow or []),
    )


def test_fetch_refuses_oversized_inputs_and_leaves_no_partial_file(tmp_path: Path, file_server: FileServer) -> None:
    file_server.files["/big.bin"] = b"z" * 10_000
    done = _fetch(tmp_path, _spec(f"{file_server.url}/big.bin", allow=[file_server.host]))
    assert done.returncode == 31, done.stderr
    assert "over the 4096 bytes left for inputs" in (tmp_path / "adminlogs" / "configure.log").read_text()
    assert os.listdir(tmp_path / "inputs" / DID.removeprefix("did:op:")) == []


def test_fetch_checks_the_sha256_of_one_chunk_and_many_chunk_files(tmp_path: Path, file_server: FileServer) -> None:
    """A file of one chunk is hashed inline, a bigger one on a hashing thread: both are checked alike."""
    for name, body in (("small.csv", b"a,b\n1,2\n"), ("big.bin", os.urandom(2 * CHUNK + 12_345))):
        file_server.files[f"/{name}"] = body
        for checksum, code in ((hashlib.sha256(body).hexdigest(), 0), ("00" * 32, 31)):
            spec = _spec(f"{file_server.url}/{name}", max_bytes=len(body), allow=[file_server.host])
            spec.datasets[0].files[0].checksum = checksum
            data = tmp_path / f"{name}-{code}"
            done = _fetch(data, spec)
            assert done.returncode == code, done.stderr
            fetched = data / "inputs" / DID.removeprefix("did:op:") / "0"
            if code == 0:
                assert fetched.read_bytes() == body
            else:
                assert "does not match the declared checksum" in done.stderr and not fetched.exists()


def test_fetch_refuses_bad_instructions_and_schemes(tmp_path: Path) -> None:
    env = {**os.environ, "C2D_FETCH_SPEC": '{"datasets": []}'}
    done = subprocess.run(
        [sys.executable, "-m", "steps.fetch", "--data", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "not a valid fetch spec" in done.stderr
    done = _fetch(tmp_path, _spec("file:///etc/passwd"))
    assert done.returncode == 31 and "unsupported URL scheme 'file'" in done.stderr


def test_fetch_refuses_non_public_addresses_unless_allowed(tmp_path: Path, file_server: FileServer) -> None:
    """SSRF: loopback, private and metadata addresses are refused, also behind a redirect or a name."""
    file_server.files["/inside.csv"] = b"secret"
    port = file_server.host.rsplit(":", 1)[1]
    for url in (
        f"{file_server.url}/inside.csv",
        f"http://localhost:{port}/inside.csv",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x",
        "http://[::ffff:127.0.0.1]/x",
    ):
        done = _fetch(tmp_path / "a", _spec(url))
        assert done.returncode == 31, (url, done.stderr)
        assert "refused to connect to a non-public address" in done.stderr, url
        assert url not in done.stderr  # URLs are the publisher's secret
    assert file_server.hits.get("/inside.csv") is None
    # An allow-listed server redirecting to a non-allowed one: the redirect is checked again.
    file_server.redirects["/hop"] = "http://127.0.0.2:9/inside.csv"
    done = _fetch(tmp_path / "b", _spec(f"{file_server.url}/hop", allow=[file_server.host]))
    assert done.returncode == 31 and "non-public address (loopback)" in done.stderr
    # The same file from the allow-listed host:port is fetched.
    done = _fetch(tmp_path / "c", _spec(f"{file_server.url}/inside.csv", allow=[file_server.host]))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "c" / "inputs" / DID.removeprefix("did:op:") / "0").read_bytes() == b"secret"


def _outputs(data: Path, count: int) -> None:
    (data / "outputs").mkdir(parents=True)
    for i in range(count):
        (data / "outputs" / f"out{i}.txt").write_text(f"result {i}")
    (data / "logs").mkdir()
    (data / "logs" / "algorithm.log").write_text("algo ran")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs as the store")
def test_interrupted_publish_lists_no_partial_result(tmp_path: Path) -> None:
    """A failure of the store itself (full), not of one file: the publish ends with 62 before any list."""
    data, target = tmp_path / "data", tmp_path / "store"
    _outputs(data, 3)
    (data / "outputs" / "out1.txt").write_bytes(b"1" * (2 << 20))
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "c2d-test", str(target)], check=True)
    try:
        done = _publish(data, target)
        assert done.returncode == 62
        assert "publishing failed: cannot store outputs/out1.txt: No space left on device" in done.stderr
        assert str(tmp_path) not in done.stderr
        assert not (target / "results.json").exists() and not (data / "results.json").exists()
        assert not list(target.rglob("*.part"))
        # The retry (what the engine's retryStrategy does) completes the job once the store has room.
        subprocess.run(["mount", "-o", "remount,size=8m", str(target)], check=True)
        assert _publish(data, target).returncode == 0
        results = json.loads((target / "results.json").read_text())
        assert [r["filename"] for r in results][:3] == ["out0.txt", "out1.txt", "out2.txt"]
        assert results[1]["filesize"] == 2 << 20
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_publish_caps_the_number_of_output_files(tmp_path: Path) -> None:
    data, target = tmp_path / "data", tmp_path / "store"
    _outputs(data, 12)
    target.mkdir()
    done = _publish(data, target, "--max-files", "5")
    assert done.returncode == 0
    results = json.loads((data / "results.json").read_text())
    assert sum(1 for r in results if r["type"] == "output") == 5
    assert "more than 5 output files" in done.stderr


def test_the_step_reads_every_fetch_spec_the_provider_writes() -> None:
    """steps.fetch_plan (no pydantic, fast start) and workflows.spec (the schema of record) agree."""
    spec = FetchSpec(
        datasets=[
            DatasetInput(
                did=DID,
                files=[
                    InputFile(url="s3://b/k", size=3, checksum="sha256:" + "AB" * 32),
                    InputFile(url="https://x/y", method="POST", headers={"Authorization": "t"}),
                ],
                ddo={"id": DID},
            )
        ],
        algorithm=AlgorithmInput(did=DID, files=[InputFile(url="ipfs://c")], custom_data={"k": 1}),
        max_bytes=10,
        access=StoreAccess(s3_endpoint="http://m:9000", ipfs_api="http://k:5001", allow_hosts=["10.0.0.0/8"]),
    )
    for raw in (spec.model_dump_json(), spec.model_dump_json(exclude_none=True)):
        plan = parse_fetch_spec(raw)
        first = plan.datasets[0].files[0]
        assert (first.url, first.size, first.checksum) == ("s3://b/k", 3, "ab" * 32)
        assert plan.datasets[0].files[1].headers == {"Authorization": "t"} and plan.datasets[0].ddo == {"id": DID}
        assert plan.algorithm.did == DID and plan.algorithm.custom_data == {"k": 1} and plan.max_bytes == 10
        assert plan.access.allow_hosts == ("10.0.0.0/8",) and plan.access.ipfs_api == "http://k:5001"
    bad = json.loads(spec.model_dump_json())
    for path, value in (
        (("datasets",), []),
        (("datasets", 0, "did"), "did:op:nope"),
        (("datasets", 0, "files", 0, "method"), "DELETE"),
        (("datasets", 0, "files", 0, "checksum"), "md5:1"),
        (("max_bytes",), 0),
        (("max_bytes",), True),
        (("access", "allow_hosts"), [1]),
    ):
        doc = json.loads(json.dumps(bad))
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(SpecError, match="not a valid fetch spec"):
            parse_fetch_spec(json.dumps(doc))
