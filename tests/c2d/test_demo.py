"""`make demo` runs `c2d demo`: a real job on a fresh embedded stack, result printed, stack stopped."""

from __future__ import annotations

import json
from pathlib import Path

from c2d.stack.procs import recorded_alive
from node.demo import run_demo
from tests.conftest import make_settings


def test_demo_runs_a_job_end_to_end(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "demo")
    lines: list[str] = []
    run_demo(settings, lines.append)
    text = "\n".join(lines)
    for step in ("published algorithm", "published dataset", "consumer ordered both", "started through the API"):
        assert step in text
    assert "status 70  Job finished" in text
    (summary_file,) = settings.store_dir.glob("*/outputs/summary.json")  # the first story's job
    summary = json.loads(summary_file.read_text())
    assert summary["Oslo"] == {"mean_temp_c": -4.23, "total_rain_mm": 5.4, "days": 3}
    assert "downloaded result 0: summary.json" in text
    assert '"mean_temp_c": -4.23' in text  # the result is printed
    # the current client too: ocean.js 8.6.2 runs a free and an escrow-paid job on the same node
    for step in ("publish", "envs", "free", "paid"):
        assert f"[ocean.js] {step} ... ok" in text, text
    assert "free job" in text and "ocean.js rows=10" in text and "OCEAN locked in the escrow" in text
    assert "settled: the node claimed" in text  # one minute of the test environment's prices
    assert "stopping postgres" in text and not recorded_alive(settings.run_dir)
