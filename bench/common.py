"""Shared by the benchmarks: an isolated embedded stack, a loopback file server, figures."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from c2d.settings import ChainSettings, FetchSettings, PostgresSettings, ProviderSettings, Settings, load_settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


@contextlib.contextmanager
def workspace(name: str) -> Iterator[Path]:
    """A folder for one benchmark run (its stack's data dir, the files it serves): removed when the run
    ends, kept (and named on stderr) when it ends by an exception or ``SystemExit``, for inspection."""
    folder = Path(tempfile.mkdtemp(prefix=f"c2d-bench-{name}-"))
    try:
        yield folder
    except BaseException:
        print(f"the run's files are kept for inspection in {folder}", file=sys.stderr)
        raise
    shutil.rmtree(folder)


def bench_settings(data_dir: Path, allow_hosts: list[str] | None = None, **overrides: object) -> Settings:
    """Settings of a throw-away stack in ``data_dir``, on free ports (never the developer's stack)."""
    return load_settings(
        data_dir=data_dir,
        postgres=PostgresSettings(port=free_port(), pool_size=20),
        chain=ChainSettings(port=free_port()),
        provider=ProviderSettings(port=free_port()),
        fetch=FetchSettings(allow_hosts=allow_hosts or []),
        **overrides,
    )


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def file_server(folder: Path) -> Iterator[str]:
    """Serves ``folder`` on 127.0.0.1; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (every process and the kernel), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """CPU time of a process (user + system), with that of its children it has waited for; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def processes_named(name: str) -> list[int]:
    """Pids of the processes whose command name is ``name``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def process_cmdline(pid: int) -> str:
    """A process's command line (its arguments joined by NUL); empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def child_pids(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def peak_rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
