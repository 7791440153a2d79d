"""The step programs run as the engines run them (``python -m steps.*``), against real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fileserver import FileServer
from workflows.spec import AlgorithmInput, DatasetInput, FetchSpec, InputFile

DID = "did:op:" + "cd" * 32


def _fetch(data: Path, spec: FetchSpec) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "C2D_FETCH_SPEC": spec.model_dump_json()}
    return subprocess.run(
        [sys.executable, "-m", "steps.fetch", "--data", str(data)], env=env, capture_output=True, text=True, timeout=60
    )


def _publish(data: Path, target: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "steps.publish", "--data", str(data), "--job-id", "x", "--target", str(target), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_fetch_refuses_oversized_inputs_and_leaves_no_partial_file(tmp_path: Path, file_server: FileServer) -> None:
    file_server.files["/big.bin"] = b"z" * 10_000
    spec = FetchSpec(
        datasets=[DatasetInput(did=DID, files=[InputFile(url=f"{file_server.url}/big.bin")])],
        algorithm=AlgorithmInput(raw_code="pass"),
        max_bytes=4096,
    )
    done = _fetch(tmp_path, spec)
    assert done.returncode == 31, done.stderr
    assert "over the 4096 bytes left for inputs" in (tmp_path / "adminlogs" / "configure.log").read_text()
    assert os.listdir(tmp_path / "inputs" / DID.removeprefix("did:op:")) == []


def test_fetch_refuses_bad_instructions_and_schemes(tmp_path: Path) -> None:
    env = {**os.environ, "C2D_FETCH_SPEC": '{"datasets": []}'}
    done = subprocess.run(
        [sys.executable, "-m", "steps.fetch", "--data", str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "not a valid fetch spec" in done.stderr
    spec = FetchSpec(
        datasets=[DatasetInput(did=DID, files=[InputFile(url="file:///etc/passwd")])],
        algorithm=AlgorithmInput(raw_code="pass"),
        max_bytes=4096,
    )
    done = _fetch(tmp_path, spec)
    assert done.returncode == 31 and "unsupported URL scheme 'file'" in done.stderr


def _outputs(data: Path, count: int) -> None:
    (data / "outputs").mkdir(parents=True)
    for i in range(count):
        (data / "outputs" / f"out{i}.txt").write_text(f"result {i}")
    (data / "logs").mkdir()
    (data / "logs" / "algorithm.log").write_text("algo ran")


def test_interrupted_publish_lists_no_partial_result(tmp_path: Path) -> None:
    data, target = tmp_path / "data", tmp_path / "store"
    _outputs(data, 3)
    (target / "outputs" / "out1.txt").mkdir(parents=True)  # storing out1.txt fails mid-publish
    done = _publish(data, target)
    assert done.returncode == 62
    assert "publishing failed: cannot store out1.txt" in done.stderr
    assert not (target / "results.json").exists() and not (data / "results.json").exists()
    assert not list(target.rglob("*.part"))
    # The retry (what the engine's retryStrategy does) completes the job.
    (target / "outputs" / "out1.txt").rmdir()
    assert _publish(data, target).returncode == 0
    results = json.loads((target / "results.json").read_text())
    assert [r["filename"] for r in results][:3] == ["out0.txt", "out1.txt", "out2.txt"]


def test_publish_caps_the_number_of_output_files(tmp_path: Path) -> None:
    data, target = tmp_path / "data", tmp_path / "store"
    _outputs(data, 12)
    target.mkdir()
    done = _publish(data, target, "--max-files", "5")
    assert done.returncode == 0
    results = json.loads((data / "results.json").read_text())
    assert sum(1 for r in results if r["type"] == "output") == 5
    assert "more than 5 output files" in done.stderr
