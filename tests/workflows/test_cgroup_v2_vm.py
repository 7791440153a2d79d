"""The local engine's limits on a pure cgroup v2 kernel, whatever this host mounts: the cgroup tests (and the
engine's hostile-job tests) run again inside the machine tools/cgroup2_vm.py boots (the distribution's kernel
with ``cgroup_no_v1=all``, this host's files read-only, the test process in a delegated group as a systemd unit
with ``Delegate=yes`` is), told to assert that they ran on v2 with every controller (``C2D_TEST_CGROUP_LAYOUT``).
Software emulation: about a minute to boot and import, several for the engine's tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VM = REPO / "tools" / "cgroup2_vm.py"


def _in_the_machine(*pytest_args: str, timeout: float) -> str:
    check = subprocess.run([sys.executable, str(VM), "check"], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.skip(f"no cgroup v2 machine can boot here: {check.stdout.strip()}")
    machine = [sys.executable, str(VM), "run", "--memory", "4096", "--timeout", str(timeout)]
    command = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *pytest_args]
    done = subprocess.run(
        [*machine, "--env", "C2D_TEST_CGROUP_LAYOUT=v2", "--", *command],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout + 60,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary, done.stdout[-3000:]
    return summary


def test_step_cgroup_limits_hold_on_cgroup_v2() -> None:
    summary = _in_the_machine(
        "tests/workflows/test_cgroup_limits.py", "tests/workflows/test_launch_prefix.py", timeout=400
    )
    assert summary.startswith("9 passed"), summary


def test_the_engine_contains_hostile_jobs_on_cgroup_v2() -> None:
    """Real Postgres, the real engine and sandboxes, in the machine: the same statuses as on this host."""
    tests = ["success_path", "memory_bomb", "fork_bomb", "endless_loop", "stop_kills"]
    summary = _in_the_machine("tests/workflows/test_local_engine.py", "-k", " or ".join(tests), timeout=600)
    assert summary.startswith(f"{len(tests)} passed"), summary
