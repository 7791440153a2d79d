"""The one shell a sandboxed step starts from: joins its cgroups, sets its rlimits, execs the sandbox (in a
new session keyring)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from workflows.local.cgroups import STALE_AFTER, StepCgroup, remove_stale_groups
from workflows.local.identity import Identity
from workflows.local.interpret import Step
from workflows.local.runner import Watch, setup_channel, step_outcome

ROOT = Path("/sys/fs/cgroup")


def _limits(text: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in text.splitlines()[1:]:
        soft, hard = line[26:].split()[:2]
        rows[line[:26].strip()] = (soft, hard)
    return rows


def test_limits_and_groups_apply_to_what_it_execs() -> None:
    cgroup = StepCgroup.create(ROOT, f"test-{secrets.token_hex(4)}", memory=256 * 1024**2, pids=32, cpu=None)
    try:
        rlimits = {"core": 0, "nofile": 512, "fsize": 1_000_000, "as": 3 * 1024**3}
        script = "cat /proc/self/limits; echo ---; cat /proc/self/cgroup; echo ---; id -u; id -G; "
        script += "grep NoNewPrivs /proc/self/status"
        done = subprocess.run(
            [*cgroup.prefix(rlimits, Identity(4242, 4343)), "sh", "-c", script],
            capture_output=True,
            text=True,
            check=True,
        )
        limits_text, groups_text, ids = done.stdout.split("---\n")
        assert ids.split() == ["4242", "4343", "NoNewPrivs:", "1"]  # that uid and gid only, no new privileges
        limits = _limits(limits_text)
        assert limits["Max core file size"] == ("0", "0")
        assert limits["Max open files"] == ("512", "512")
        assert limits["Max file size"] == ("1000448", "1000448")  # rounded up to 512-byte blocks
        assert limits["Max address space"] == (str(3 * 1024**3), str(3 * 1024**3))
        joined = [line.split(":", 2)[2] for line in groups_text.splitlines()]
        for group in cgroup.directories:  # v1: one per controller, v2: one
            assert any(path != "/" and str(group).endswith(path) for path in joined), (group, joined)
    finally:
        cgroup.remove()


def test_a_limit_it_cannot_set_fails_the_step_with_the_reason(tmp_path: Path) -> None:
    cgroup = StepCgroup()
    log = tmp_path / "step.log"
    with open(log, "wb") as out, open(setup_channel(log), "wb") as setup:
        code = subprocess.run([*cgroup.prefix({"nofile": 10**9}), "true"], stdout=out, stderr=setup).returncode
    assert code == 125
    step = Step.bare("algorithm", "algorithm", "python", ["true"])
    outcome = step_outcome(step, code, None, cgroup, Watch((), None, None), log)
    assert (outcome.phase, outcome.message) == ("Error", "could not set nofile to 1000000000")
    # the algorithm's own exit code 125 stays the algorithm's failure, whatever it prints
    log.write_text("c2d-step: could not set nofile to 1\nbwrap: Can't mount proc\n")
    setup_channel(log).write_text("")
    outcome = step_outcome(step, 125, None, cgroup, Watch((), None, None), log)
    assert (outcome.phase, outcome.message) == ("Failed", "exit code 125")


def test_the_command_gets_a_new_empty_session_keyring() -> None:
    keyctl = shutil.which("keyctl")
    if keyctl is None:
        pytest.skip("keyutils is not installed (tools/setup_system.sh installs it)")
    show = [keyctl, "show", "@s"]  # "Keyring" then "<serial> <perms> <uid> <gid> keyring: <name>"
    mine = subprocess.run(show, capture_output=True, text=True, check=True).stdout.splitlines()[1].split()
    theirs = (
        subprocess.run([*StepCgroup().prefix({}, None, keyctl), *show], capture_output=True, text=True, check=True)
        .stdout.splitlines()[1]
        .split()
    )
    assert theirs[0] != mine[0] and theirs[-1] == "_ses"
    listing = subprocess.run(
        [*StepCgroup().prefix({}, None, keyctl), keyctl, "rlist", "@s"], capture_output=True, text=True, check=True
    )
    assert listing.stdout.strip() == ""  # nothing in it


def test_stale_step_groups_are_removed_but_not_busy_or_new_ones() -> None:
    """What a killed engine left (empty, old) goes; a group in use or just created stays."""
    stale, busy, new = (
        StepCgroup.create(ROOT, f"test-{name}-{secrets.token_hex(4)}", memory=None, pids=64, cpu=1.0)
        for name in ("stale", "busy", "new")
    )
    if not stale.groups:
        pytest.skip("no cgroup pids or cpu controller this process may write to")
    sleeper = subprocess.Popen([*busy.prefix({}), "sleep", "60"])
    try:
        end = time.monotonic() + 10
        while sleeper.pid not in busy.pids():
            assert time.monotonic() < end and sleeper.poll() is None, "the sleeper did not join its groups"
            time.sleep(0.01)
        for group in [*stale.groups.values(), *busy.groups.values()]:
            os.utime(group, (time.time() - 2 * STALE_AFTER,) * 2)
        remove_stale_groups(ROOT)
        assert not any(group.exists() for group in stale.groups.values())
        assert all(group.exists() for group in [*busy.groups.values(), *new.groups.values()])
    finally:
        sleeper.kill()
        sleeper.wait()
        for cgroup in (stale, busy, new):
            cgroup.remove()
