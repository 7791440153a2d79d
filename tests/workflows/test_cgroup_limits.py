"""The step cgroups' limits as a hostile step meets them, on whichever cgroup layout this host has (v1 per
controller, or the v2 unified hierarchy): a memory bomb is OOM-killed and reported as such, a fork bomb stops
at the pids cap, a busy loop gets its CPU quota only, a kill leaves no process, the group of all steps weighs
less than the node. The same tests run on a pure cgroup v2 kernel through tools/cgroup2_vm.py
(tests/workflows/test_cgroup_v2_vm.py); ``C2D_TEST_CGROUP_LAYOUT`` (``v1``/``v2``) makes them also assert which
layout they ran on, and that every controller was available there.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflows.local.cgroup_layout import JOBS_CPU_SHARES, JOBS_CPU_WEIGHT, NODE_LEAF, V2, detect
from workflows.local.cgroups import StepCgroup, layout_name, prepare_jobs_group
from workflows.local.interpret import Step
from workflows.local.runner import Watch, setup_channel, step_outcome

ROOT = Path("/sys/fs/cgroup")
MiB = 1024**2


@pytest.fixture(scope="module")
def prepared() -> list[str]:
    """The jobs group made as the engine makes it at start; the controllers steps cannot get here."""
    missing = prepare_jobs_group(ROOT)
    if expected := os.environ.get("C2D_TEST_CGROUP_LAYOUT"):
        assert (layout_name(ROOT), missing) == (expected, [])
    return missing


def _step_group(prepared: list[str], **limits: float | None) -> Iterator[StepCgroup]:
    wanted = {name for name, value in limits.items() if value is not None}
    if unusable := wanted & set(prepared):
        pytest.skip(f"cgroup {layout_name(ROOT)}: no {', '.join(sorted(unusable))} controller this process may use")
    values = {"memory": None, "pids": None, "cpu": None, **limits}
    cgroup = StepCgroup.create(
        ROOT,
        f"test-{secrets.token_hex(4)}",
        memory=int(values["memory"]) if values["memory"] else None,
        pids=int(values["pids"]) if values["pids"] else None,
        cpu=values["cpu"],
    )
    try:
        assert cgroup.missing == []
        yield cgroup
    finally:
        cgroup.remove()


def _run(cgroup: StepCgroup, code: str, log: Path, timeout: float = 60) -> int:
    with open(log, "wb") as out, open(setup_channel(log), "wb") as setup:
        command = [*cgroup.prefix({}), sys.executable, "-S", "-c", code]
        return subprocess.run(command, stdout=out, stderr=setup, timeout=timeout).returncode


def test_the_jobs_group_weighs_a_quarter_of_a_node_process(prepared: list[str]) -> None:
    if "cpu" in prepared:
        pytest.skip(f"cgroup {layout_name(ROOT)}: no cpu controller this process may use")
    layout = detect(ROOT)
    group = layout.jobs_group("cpu")
    if isinstance(layout, V2):
        assert int((group / "cpu.weight").read_text()) == JOBS_CPU_WEIGHT
        if (layout.base / "cgroup.type").exists():  # a delegated group, not the hierarchy's root
            # the engine's processes left it for a leaf beside the jobs' group (no internal processes)
            own = Path(f"/proc/{os.getpid()}/cgroup").read_text().strip().split(":", 2)[2]
            assert (layout.base / "cgroup.procs").read_text() == ""
            assert own == f"/{(layout.base / NODE_LEAF).relative_to(layout.mount)}"
    else:
        assert int((group / "cpu.shares").read_text()) == JOBS_CPU_SHARES


def test_a_memory_bomb_is_oom_killed_and_reported(prepared: list[str], tmp_path: Path) -> None:
    for cgroup in _step_group(prepared, memory=64 * MiB):
        bomb = "blocks = []\nwhile True:\n    blocks.append(bytearray(8 * 1024**2))"
        code = _run(cgroup, bomb, tmp_path / "step.log")
        step = dataclasses.replace(Step.bare("algorithm", "algorithm", "python", ["python"]), memory=64 * MiB)
        outcome = step_outcome(step, code, None, cgroup, Watch((), None, None), tmp_path / "step.log")
        assert (outcome.phase, outcome.message, outcome.reason) == ("Failed", "out of memory (limit 64 MiB)", "oom")
        assert 0 < (cgroup.peak_memory() or 0) <= 64 * MiB


def test_a_fork_bomb_stops_at_the_pids_cap(prepared: list[str], tmp_path: Path) -> None:
    for cgroup in _step_group(prepared, pids=16):
        bomb = (
            "import os, time\n"
            "n = 0\n"
            "for _ in range(500):\n"
            "    try:\n"
            "        if os.fork() == 0:\n"
            "            time.sleep(60); os._exit(0)\n"
            "        n += 1\n"
            "    except OSError:\n"
            "        break\n"
            "print(n, flush=True)\n"
            "os._exit(0)\n"
        )
        assert _run(cgroup, bomb, tmp_path / "step.log") == 0
        forked = int((tmp_path / "step.log").read_text())
        assert 0 < forked < 16  # the shell that joined, python, then its children: the cap counts them all
        assert cgroup.pids()  # the sleeping children are still in the group
        cgroup.kill()
        assert cgroup.pids() == set()


def test_a_busy_loop_gets_its_cpu_quota_only(prepared: list[str], tmp_path: Path) -> None:
    for cgroup in _step_group(prepared, cpu=0.2):
        spin = (
            "import os, time\n"
            "end = time.monotonic() + 1.5\n"
            "while time.monotonic() < end:\n"
            "    pass\n"
            "t = os.times()\n"
            "print(t.user + t.system, flush=True)\n"
        )
        assert _run(cgroup, spin, tmp_path / "step.log") == 0
        used = float((tmp_path / "step.log").read_text())
        assert used < 0.2 * 1.5 * 2, used  # 0.3 s allowed in 1.5 s; an unlimited loop takes ~1.5 s (or ~0.75 s
        # on a saturated 2-core host)


def test_a_killed_group_is_left_empty_and_removable(prepared: list[str], tmp_path: Path) -> None:
    for cgroup in _step_group(prepared, pids=64, memory=256 * MiB):
        spawner = subprocess.Popen(
            [
                *cgroup.prefix({}),
                sys.executable,
                "-S",
                "-c",
                "import os, time\nfor _ in range(8):\n    os.fork() == 0 and time.sleep(60)\ntime.sleep(60)",
            ]
        )
        try:
            end = time.monotonic() + 20
            while len(cgroup.pids()) < 9 and time.monotonic() < end:
                time.sleep(0.02)
            assert len(cgroup.pids()) >= 9
            cgroup.kill()
            assert cgroup.pids() == set()
        finally:
            spawner.kill()
            spawner.wait()
        directories = cgroup.directories
        cgroup.remove()
        assert not any(group.exists() for group in directories)
