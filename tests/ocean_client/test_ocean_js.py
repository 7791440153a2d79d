"""The unmodified ocean.js 8.6.2 client (tests/oceanjs/flow.mjs) runs ocean.js's compute flow against us.

flow.mjs publishes through the node (encrypt, validate, the indexer), lists the environments, runs a free
job, is refused resources above the maximum, pays a job (orders + Escrow), reuses its orders, streams a
running job's logs, stops a job and is refused an untrusted algorithm: every step through ocean.js's
public API, as its ComputeFlow integration test and ocean-cli do. It prints one JSON report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from c2d.settings import ANVIL_KEYS
from c2d.stack.stack import Stack
from node.wiring import Node
from tests.fileserver import FileServer

OCEANJS = Path(__file__).parents[1] / "oceanjs"
FLOW = OCEANJS / "flow.mjs"
STEPS = ("publish", "envs", "free", "resources-above-max", "paid", "reuse", "logs", "stop", "untrusted")
DATA = b"city,temp\nparis,12\nberlin,9\nrome,17\n"  # 4 lines: the algorithm prints "ocean.js rows=4"
ALGORITHM = (Path(__file__).parents[2] / "node" / "demo_data" / "count_rows.py").read_bytes()  # the demo's
SLOW_ALGORITHM = b"""import time
for i in range(80):
    print(f'ocean.js tick {i}', flush=True)
    time.sleep(0.5)
print('ocean.js slow done', flush=True)
"""


def run_flow(node_url: str, stack: Stack, file_server: FileServer, *steps: str) -> tuple[dict[str, Any], str]:
    """Runs flow.mjs (``steps``, or all) against ``node_url``; its JSON report and its whole output."""
    settings = stack.settings
    file_server.files["/oceanjs-data.csv"] = DATA
    file_server.files["/oceanjs-algo.py"] = ALGORITHM
    file_server.files["/oceanjs-slow.py"] = SLOW_ALGORITHM
    env = {
        **os.environ,
        "RPC": settings.rpc_url,
        "NODE_URL": node_url,
        "ADDRESS_FILE": str(settings.address_file),
        "PUBLISHER_KEY": ANVIL_KEYS[2],
        "CONSUMER_KEY": ANVIL_KEYS[3],
        "OCEAN_MINTER_KEY": settings.chain.deployer_key.get_secret_value(),
        "DATA_URL": f"{file_server.url}/oceanjs-data.csv",
        "ALGO_URL": f"{file_server.url}/oceanjs-algo.py",
        "SLOW_ALGO_URL": f"{file_server.url}/oceanjs-slow.py",
    }
    done = subprocess.run(
        ["node", str(FLOW), *steps], cwd=OCEANJS, env=env, capture_output=True, text=True, timeout=840
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    progress = "\n".join(line for line in done.stdout.splitlines() if not line.startswith("{"))
    output = f"stdout:\n{progress[-6000:]}\nstderr:\n{done.stderr[-6000:]}"
    assert lines, f"flow.mjs printed no report (exit {done.returncode})\n{output}"
    report: dict[str, Any] = json.loads(lines[-1])
    assert ("error" in report) == (done.returncode != 0), output
    return report, output


@pytest.mark.timeout(900)  # publishes 4 assets and runs 6 jobs, 2 of them slow on purpose
@pytest.mark.skipif(shutil.which("node") is None, reason="no `node` on PATH: the ocean.js client needs Node.js >= 18")
@pytest.mark.skipif(
    not (OCEANJS / "node_modules" / "@oceanprotocol" / "lib").is_dir(),
    reason="no tests/oceanjs/node_modules: `make setup` installs the ocean.js 8.6.2 client there (npm ci)",
)
def test_ocean_js_compute_flow(stack: Stack, file_server: FileServer) -> None:
    settings = stack.settings  # its environment has a free tier and prices (tests/conftest.py)
    with Node(settings):
        report, output = run_flow(settings.provider_url, stack, file_server, *STEPS)
    assert "error" not in report, f"{json.dumps(report['error'], indent=2)}\n{output}"
    steps = report["steps"]
    assert list(steps) == list(STEPS) and all(step["ok"] for step in steps.values()), output
    for name in ("free", "paid", "reuse"):
        assert steps[name]["rows"] == 4, steps[name]  # the algorithm read the whole dataset
    assert steps["reuse"]["jobId"] != steps["paid"]["jobId"]
    assert steps["stop"]["seconds_to_end"] < 20
