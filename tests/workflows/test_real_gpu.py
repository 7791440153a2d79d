"""A GPU job and a job without GPUs through the real local engine, on a machine with an NVIDIA GPU and its
driver; skipped elsewhere (tests/workflows/test_local_gpus.py covers grants, binds and errors with stand-in
devices). The GPU job's algorithm lists its GPUs with ``nvidia-smi -L`` and counts CUDA devices through the host
driver's libcuda (no CUDA toolkit needed); the job without GPUs must find neither a device node nor a CUDA
device. tools/gpu_check.py checks the same sandbox without the engine."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from c2d.db.pool import Pool
from c2d.environments import GpuTerms
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from workflows.local.engine import LocalEngine
from workflows.local.gpu import PROBE

from .conftest import FileServer, Jobs
from .jobs import job_spec, make_environment

DEVICES = sorted(int(m.group(1)) for p in Path("/dev").glob("nvidia*") if (m := re.fullmatch(r"nvidia(\d+)", p.name)))
pytestmark = pytest.mark.skipif(
    not (Path("/dev/nvidiactl").exists() and DEVICES),
    reason="no NVIDIA GPU and driver on this machine (/dev/nvidiactl, /dev/nvidia<N>)",
)
# the driver maps a lot at cuInit: room for it (and 120 s, the machine's first CUDA start may be slow)
GPU = make_environment(
    id="real-gpu",
    gpu=GpuTerms(devices=DEVICES or [0], max_per_job=1),
    gpus=1,
    ram_gb=4,
    max_job_duration=120,
    step_timeout=150,
)
PLAIN = make_environment()
LOOK = PROBE + "open('/data/outputs/seen.json', 'w').write(json.dumps(seen))\n"


@pytest.fixture(scope="module")
def engine(stack: Stack, pool: Pool) -> Iterator[LocalEngine]:
    settings = stack.settings.model_copy(update={"environments": [*stack.settings.environments, GPU]})
    with LocalEngine(settings, pool, database_dsn(settings)) as running:
        yield running


def _seen(jobs: Jobs, file_server: FileServer, name: str, env_id: str) -> dict[str, object]:
    file_server.files[f"/{name}.csv"] = b"x"
    env = GPU if env_id == GPU.id else PLAIN
    job = jobs.wait(jobs.submit(job_spec(LOOK, [f"{file_server.url}/{name}.csv"]), env), timeout=180)
    assert job.status == 70, (job.status_text, job.details)
    seen: dict[str, object] = json.loads(jobs.stored(job.job_id, "outputs/seen.json").read_text())
    print(name, job.details.get("gpus"), seen)  # the note of a GPU run quotes it
    return seen


def test_a_gpu_job_uses_its_gpu_and_a_plain_job_sees_none(jobs: Jobs, file_server: FileServer) -> None:
    gpu_job = _seen(jobs, file_server, "gpu", GPU.id)
    assert isinstance(gpu_job["smi"], list) and len(gpu_job["smi"]) == 1, gpu_job
    assert gpu_job["cuda"] == 1, gpu_job
    plain = _seen(jobs, file_server, "plain", PLAIN.id)
    assert plain["nodes"] == [] and plain["cuda"] != 1, plain
    assert not plain["smi"] or isinstance(plain["smi"], str), plain  # nothing listed, or no nvidia-smi at all
