"""The unmodified ocean.py 3.1.2 client (own virtualenv, web3 6) runs the README compute flow against us."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from c2d.settings import ANVIL_KEYS
from c2d.stack.stack import Stack
from node.wiring import Node
from tests.fileserver import FileServer

HERE = Path(__file__).parent
OCEAN_PYTHON = HERE.parents[1] / ".venv-ocean" / "bin" / "python"
ALGORITHM = (
    b"import os, json\n"
    b"did = json.loads(os.environ['DIDS'])[0]\n"
    b"n = len(open(f'/data/inputs/{did}/0').read().split())\n"
    b"print('rows', n)\n"
    b"open('/data/outputs/rows.txt', 'w').write(str(n))\n"
)


@pytest.mark.skipif(
    not OCEAN_PYTHON.exists(),
    reason="no .venv-ocean: ocean.py 3.1.2 needs Python 3.8-3.10 (its enforce_typing breaks on 3.11+) and "
    "tools/setup_ocean_venv.sh found none on this machine",
)
def test_ocean_py_compute_flow(stack: Stack, file_server: FileServer) -> None:
    settings = stack.settings
    file_server.files["/ocean-data.csv"] = b"x\ny\nz\nw\n"
    file_server.files["/ocean-algo.py"] = ALGORITHM
    env = {
        **os.environ,
        "RPC_URL": settings.rpc_url,
        "PROVIDER_URL": settings.provider_url,
        "ADDRESS_FILE": str(settings.address_file),
        "DATA_URL": f"{file_server.url}/ocean-data.csv",
        "ALGO_URL": f"{file_server.url}/ocean-algo.py",
        "ALICE_KEY": ANVIL_KEYS[2],
        "BOB_KEY": ANVIL_KEYS[3],
    }
    with Node(settings):
        done = subprocess.run(
            [str(OCEAN_PYTHON), str(HERE / "ocean_flow.py")], env=env, capture_output=True, text=True, timeout=240
        )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"ocean.py printed nothing\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-4000:]}"
    report = json.loads(lines[-1])
    assert "error" not in report, f"{report['error']}\n{report.get('traceback')}"
    assert report["final"] == 70 and report["output"] == "4"
    assert "rows 4" in report["algorithm_log"]
    assert report["trusted"][0]["filesChecksum"]  # computed by ocean.py through our fileinfo
