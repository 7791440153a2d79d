"""The warm step runner's rehearsal: both programs run once on a throw-away job, and nothing of it stays."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from workflows.exceptions import RehearsalError
from workflows.local.rehearsal import check_exit

REPO = Path(__file__).resolve().parents[2]
# As in the runner: a fresh interpreter without site, the programs loaded, then the rehearsal.
SCRIPT = """
import json, logging, os, sys
before = dict(os.environ)
from workflows.local.rehearsal import LOGGERS, rehearse
rehearse()
assert dict(os.environ) == before, "environment changed"
assert not any(logging.getLogger(name).handlers for name in LOGGERS), "handlers left"
print(json.dumps(sorted(os.listdir(os.environ["TMPDIR"]))))
"""


def test_the_rehearsal_runs_both_programs_and_leaves_nothing(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-S", "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # its scratch folder is gone
    assert done.stderr == ""  # the programs' log lines went nowhere


def test_a_failed_rehearsal_names_the_program_and_its_last_line() -> None:
    output = io.StringIO("2026-12-02T08:00:00+0000 INFO start\n2026-12-02T08:00:01+0000 ERROR no route\n")
    with pytest.raises(RehearsalError, match=r"input-fetch exited 69 in the rehearsal: .*ERROR no route"):
        check_exit("input-fetch", 69, output)
    check_exit("output-publish", 0, io.StringIO())
