"""`c2d up` / `c2d down` as a user runs them: real processes, real ports, crashes and bad input."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from c2d.stack.ports import port_open
from c2d.stack.procs import process_start_time
from tests.conftest import free_port

pytestmark = pytest.mark.slow


class Cli:
    """Runs `python -m node` against an isolated data dir and free ports."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.pg_port, self.chain_port = free_port(), free_port()
        self.env = dict(
            os.environ,
            C2D_DATA_DIR=str(data_dir),
            C2D_POSTGRES__PORT=str(self.pg_port),
            C2D_CHAIN__PORT=str(self.chain_port),
        )

    def run(self, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "node", *args],
            env={**self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_foreground(self) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "up"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        wait_for_line(lines, "stack ready", 120)
        return proc, lines

    def stack_pids(self) -> list[int]:
        pids = []
        for pid_file in (self.data_dir / "run").glob("*.pid"):
            pids.append(int(pid_file.read_text().split('"pid": ')[1].split(",")[0]))
        return pids

    def ports_closed(self) -> bool:
        return not port_open("127.0.0.1", self.pg_port) and not port_open("127.0.0.1", self.chain_port)


def wait_for_line(lines: queue.Queue[str], needle: str, timeout: float) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not printed within {timeout} s; got: {seen[-10:]}")


def pid_alive(pid: int) -> bool:
    return process_start_time(pid) is not None  # zombies count as dead


def eventually(check: object, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


@pytest.fixture()
def cli(tmp_path: Path) -> Iterator[Cli]:
    runner = Cli(tmp_path / "data")
    yield runner
    runner.run("down")


def test_foreground_up_reports_progress_status_ok_then_ctrl_c_stops_everything(cli: Cli) -> None:
    proc, _ = cli.start_foreground()
    pids = cli.stack_pids()
    assert len(pids) == 2 and all(pid_alive(p) for p in pids)
    status = cli.run("status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "postgres" in status.stdout and "anvil" in status.stdout and "contracts" in status.stdout
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    assert not any(pid_alive(p) for p in pids)
    assert cli.ports_closed()
    assert list((cli.data_dir / "run").glob("*.pid")) == []


def test_a_killed_cli_leaves_no_orphan_and_the_next_up_works(cli: Cli) -> None:
    proc, _ = cli.start_foreground()
    pids = cli.stack_pids()
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait(timeout=10)
    assert eventually(lambda: not any(pid_alive(p) for p in pids)), "stack processes outlived the CLI"
    assert eventually(cli.ports_closed)
    again = cli.run("up", "--detach")
    assert again.returncode == 0, again.stdout + again.stderr
    assert cli.run("status").returncode == 0
    down = cli.run("down")
    assert down.returncode == 0 and "stack stopped" in down.stdout
    assert eventually(cli.ports_closed)


def test_detached_up_then_a_second_up_is_refused_then_down(cli: Cli) -> None:
    first = cli.run("up", "--detach")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "contracts ready" in first.stdout
    second = cli.run("up", "--detach")
    assert second.returncode == 1
    assert "already running" in second.stderr and "c2d down" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    assert cli.run("down").returncode == 0
    assert eventually(cli.ports_closed)
    assert "nothing running" in cli.run("down").stdout


def test_a_port_in_use_is_named_with_its_holder_and_nothing_is_left_running(cli: Cli) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", cli.chain_port))
        blocker.listen()
        result = cli.run("up")
    assert result.returncode == 1
    error = result.stderr.strip()
    assert len(error.splitlines()) == 1, error
    assert f"port {cli.chain_port} needed by anvil is already in use by python" in error
    assert "C2D_CHAIN__PORT" in error
    assert "stopping postgres" in result.stdout  # the part already started was stopped
    assert cli.ports_closed() and list((cli.data_dir / "run").glob("*.pid")) == []


def test_a_missing_npm_package_gives_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("up", C2D_NPM_DIR=str(tmp_path / "empty"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: anvil not found at {tmp_path / 'empty'}/@foundry-rs/anvil-linux-amd64/bin/anvil; "
        "run `make setup` (npm ci installs @foundry-rs/anvil)"
    ]
    assert cli.ports_closed()


def test_a_bad_setting_is_reported_by_name(cli: Cli) -> None:
    result = cli.run("status", C2D_CHAIN__PORT="not-a-port")
    assert result.returncode == 1
    assert "chain.port" in result.stderr and "integer" in result.stderr


def test_a_dev_key_against_an_external_chain_is_refused(cli: Cli) -> None:
    result = cli.run("config", C2D_CHAIN__RPC_URL="https://rpc.example.org")
    assert result.returncode == 1
    assert "public anvil development key" in result.stderr


def test_missing_postgres_binaries_give_one_clear_line(cli: Cli, tmp_path: Path) -> None:
    result = cli.run("up", C2D_POSTGRES__BIN_DIR=str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PostgreSQL server binaries (initdb, postgres) not found" in lines[0]
    assert "make setup" in lines[0]
