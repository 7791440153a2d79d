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
    (job_dir,) = [p for p in settings.store_dir.iterdir() if p.is_dir()]
    summary = json.loads((job_dir / "outputs" / "summary.json").read_text())
    assert summary["Oslo"] == {"mean_temp_c": -4.23, "total_rain_mm": 5.4, "days": 3}
    assert "downloaded result 0: summary.json" in text
    assert '"mean_temp_c": -4.23' in text  # the result is printed
    assert "stopping postgres" in text and not recorded_alive(settings.run_dir)
