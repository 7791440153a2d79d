"""GPUs of the local engine: grants, the device nodes and driver files a sandbox gets, and the clear errors.

The host's NVIDIA devices are stood in for by character devices like /dev/null (1, 3) in a folder of the test
(``C2D_ENGINE__GPU_DEV_DIR``): the engine binds them exactly as it would bind real ones. What a real GPU does
with them (nvidia-smi, cuInit) is tools/gpu_check.py's to check on an NVIDIA machine."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from c2d.db import gpu_grants
from c2d.db.pool import Pool
from c2d.environments import GpuTerms
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from c2d.status import JobStatus
from workflows.exceptions import GpuUnavailableError
from workflows.local import gpu
from workflows.local.engine import LocalEngine

from .conftest import FileServer, Jobs
from .jobs import job_spec, make_environment

TWO_GPUS = make_environment(id="gpu-two", gpu=GpuTerms(devices=[0, 1]), gpus=1)
GONE_GPU = make_environment(id="gpu-gone", gpu=GpuTerms(devices=[7]), gpus=1)  # no nvidia7 on the "host"
UNDECLARED = make_environment(id="gpu-undeclared", gpu=GpuTerms(devices=[0]), gpus=1)  # not the node's
NO_GPU = make_environment()

# What the algorithm sees; with HOLD it then waits for the test's go (a file in its logs folder).
SEE = (
    "import os, json, time\n"
    "nodes = sorted(n for n in os.listdir('/dev') if n.startswith('nvidia'))\n"
    "for n in nodes: open('/dev/' + n, 'rb').read(1)\n"
    "seen = {'nodes': nodes, 'visible': os.environ.get('NVIDIA_VISIBLE_DEVICES'),\n"
    "        'cuda': os.environ.get('CUDA_VISIBLE_DEVICES')}\n"
    "open('/data/outputs/seen.json', 'w').write(json.dumps(seen))\n"
    "print('holding', flush=True)\n"
)
HOLD = SEE + "while not os.path.exists('/data/logs/go'): time.sleep(0.02)\n"


def _stand_in(folder: Path, name: str) -> None:
    os.mknod(folder / name, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.chmod(folder / name, 0o666)


@pytest.fixture(scope="module")
def dev_dir() -> Iterator[Path]:
    """A device folder with the driver's control nodes and GPUs 0 and 1; every job uid can walk to it."""
    folder = Path(tempfile.mkdtemp(prefix="c2d-gpu-dev-"))
    folder.chmod(0o755)
    for name in ("nvidiactl", "nvidia-uvm", "nvidia0", "nvidia1"):
        _stand_in(folder, name)
    yield folder
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def engine(stack: Stack, pool: Pool, dev_dir: Path) -> Iterator[LocalEngine]:
    settings = stack.settings.model_copy(
        update={
            "environments": [*stack.settings.environments, TWO_GPUS, GONE_GPU],
            "engine": stack.settings.engine.model_copy(update={"gpu_dev_dir": dev_dir}),
        }
    )
    with LocalEngine(settings, pool, database_dsn(settings)) as running:
        yield running


def _held(pool: Pool, job_id: str) -> list[int]:
    with pool.connection() as conn:
        return sorted(device for device, holder in gpu_grants.holders(conn).items() if holder == job_id)


def _seen(jobs: Jobs, job_id: str) -> dict[str, object]:
    seen: dict[str, object] = json.loads(jobs.stored(job_id, "outputs/seen.json").read_text())
    return seen


def test_a_gpu_job_sees_its_device_and_the_control_nodes_only(jobs: Jobs, pool: Pool, file_server: FileServer) -> None:
    file_server.files["/gpu.csv"] = b"x"
    job = jobs.wait(jobs.submit(job_spec(SEE, [f"{file_server.url}/gpu.csv"]), TWO_GPUS))
    assert (job.status, job.status_text) == (70, "Job finished"), job.details
    granted = job.details["gpus"]
    assert granted in ([0], [1])
    assert _seen(jobs, job.job_id) == {
        "nodes": sorted([f"nvidia{granted[0]}", "nvidia-uvm", "nvidiactl"]),
        "visible": str(granted[0]),
        "cuda": None,
    }
    assert _held(pool, job.job_id) == []  # given back before its final status


def test_a_job_without_gpus_sees_no_nvidia_node(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/nogpu.csv"] = b"x"
    job = jobs.wait(jobs.submit(job_spec(SEE, [f"{file_server.url}/nogpu.csv"]), NO_GPU))
    assert job.status == 70
    assert "gpus" not in job.details
    assert _seen(jobs, job.job_id) == {"nodes": [], "visible": None, "cuda": None}


def test_two_jobs_at_once_get_different_devices(jobs: Jobs, pool: Pool, file_server: FileServer) -> None:
    file_server.files["/pair.csv"] = b"x"
    ids = [jobs.submit(job_spec(HOLD, [f"{file_server.url}/pair.csv"]), TWO_GPUS) for _ in range(2)]
    for job_id in ids:
        jobs.wait_log(job_id, "holding")
    held = [_held(pool, job_id) for job_id in ids]
    assert sorted(held) == [[0], [1]]  # both running, one device each
    for job_id in ids:
        (jobs.live_log(job_id).parent / "go").write_text("")
    finished = [jobs.wait(job_id) for job_id in ids]
    assert [job.status for job in finished] == [70, 70]
    assert [job.details["gpus"] for job in finished] == held
    assert [_seen(jobs, job_id)["visible"] for job_id in ids] == [str(h[0]) for h in held]
    assert [_held(pool, job_id) for job_id in ids] == [[], []]


def test_a_gpu_gone_from_the_machine_ends_the_job_with_its_index(
    jobs: Jobs, pool: Pool, dev_dir: Path, file_server: FileServer
) -> None:
    file_server.files["/gone.csv"] = b"x"
    job = jobs.wait(jobs.submit(job_spec(SEE, [f"{file_server.url}/gone.csv"]), GONE_GPU))
    assert job.status == JobStatus.DATA_PROVISIONING_FAILED
    assert job.status_text.endswith("GPU 7 of this environment is not available on this machine")
    assert str(dev_dir) not in job.status_text
    assert _held(pool, job.job_id) == []


def test_a_gpu_job_of_an_environment_the_node_does_not_declare_fails(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/undeclared.csv"] = b"x"
    job = jobs.wait(jobs.submit(job_spec(SEE, [f"{file_server.url}/undeclared.csv"]), UNDECLARED))
    assert job.status == JobStatus.DATA_PROVISIONING_FAILED
    assert job.status_text.endswith("the environment 'gpu-undeclared' of this node has no GPU")


def test_the_engine_names_at_start_the_gpus_this_machine_lacks(
    engine: LocalEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="workflows.local.engine"):
        engine._check_gpus()  # what start() runs
    assert [r.getMessage() for r in caplog.records] == [
        "environment gpu-gone: GPU 7 of this environment is not available on this machine; "
        "its GPU jobs will fail to start"
    ]


# -- the sandbox's part, without an engine -------------------------------------------------------
def test_no_driver_is_a_clear_error(tmp_path: Path) -> None:
    _stand_in(tmp_path, "nvidia0")
    with pytest.raises(GpuUnavailableError, match="the NVIDIA driver is not present on this machine"):
        gpu.sandbox_access(tmp_path, [0])
    _stand_in(tmp_path, "nvidiactl")
    (tmp_path / "nvidia3").write_text("")  # not a device
    with pytest.raises(GpuUnavailableError, match=r"^GPU 3 of this environment is not available"):
        gpu.sandbox_access(tmp_path, [0, 3])


def test_only_the_granted_devices_and_present_control_nodes_are_bound(tmp_path: Path) -> None:
    for name in ("nvidiactl", "nvidia-uvm-tools", "nvidia0", "nvidia1", "nvidia2"):
        _stand_in(tmp_path, name)
    access = gpu.sandbox_access(tmp_path, [2, 0], ldconfig="/nonexistent/ldconfig")
    binds = [access.args[i + 1 : i + 3] for i, a in enumerate(access.args) if a == "--dev-bind"]
    assert binds == [
        [str(tmp_path / "nvidia2"), "/dev/nvidia2"],
        [str(tmp_path / "nvidia0"), "/dev/nvidia0"],
        [str(tmp_path / "nvidiactl"), "/dev/nvidiactl"],
        [str(tmp_path / "nvidia-uvm-tools"), "/dev/nvidia-uvm-tools"],
    ]
    assert access.env == {"NVIDIA_VISIBLE_DEVICES": "2,0"}


def test_driver_libraries_come_from_the_linker_cache(tmp_path: Path) -> None:
    """The cache's NVIDIA compute and utility libraries, each shown at its path: a symlink as itself plus its
    target; the ones under the system folders every sandbox has need no bind; other libraries are left out."""
    libs = tmp_path / "nvidia" / "lib64"
    libs.mkdir(parents=True)
    (libs / "libcuda.so.550.1").write_bytes(b"\x7fELF")
    (libs / "libcuda.so.1").symlink_to("libcuda.so.550.1")
    (libs / "libnvidia-ml.so.1").write_bytes(b"\x7fELF")
    (libs / "libz.so.1").write_bytes(b"\x7fELF")
    system = "/usr/lib/x86_64-linux-gnu/libnvidia-ptxjitcompiler.so.1"
    listing = "\n".join(
        [
            "4 libs found in cache `/etc/ld.so.cache'",
            f"\tlibcuda.so.1 (libc6,x86-64) => {libs}/libcuda.so.1",
            f"\tlibnvidia-ml.so.1 (libc6,x86-64) => {libs}/libnvidia-ml.so.1",
            f"\tlibz.so.1 (libc6,x86-64) => {libs}/libz.so.1",
            f"\tlibnvidia-ptxjitcompiler.so.1 (libc6,x86-64) => {system}",
        ]
    )
    ldconfig = tmp_path / "ldconfig"
    ldconfig.write_text(f"#!/bin/sh\ncat <<'EOF'\n{listing}\nEOF\n")
    ldconfig.chmod(0o755)
    found = gpu.driver_files(str(ldconfig))
    assert found[:3] == [libs / "libcuda.so.1", libs / "libnvidia-ml.so.1", Path(system)]
    assert gpu.file_args(found[:3]) == [
        "--symlink", "libcuda.so.550.1", f"{libs}/libcuda.so.1",
        "--ro-bind", f"{libs}/libcuda.so.550.1", f"{libs}/libcuda.so.550.1",
        "--ro-bind", f"{libs}/libnvidia-ml.so.1", f"{libs}/libnvidia-ml.so.1",
    ]  # fmt: skip
