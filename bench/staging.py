"""Staging throughput: input-fetch and output-publish of one big file against a raw copy, and peak RSS.

    .venv/bin/python bench/staging.py [--gib 1] [--rounds 9]

The source is a 1 GiB file served over HTTP on loopback by a sendfile() server (so the server is not
the bottleneck). Raw fetch: curl to a file, the same URL. input-fetch: the step program as the engine
runs it when a step gets a sandbox of its own (python -S, streamed, capped, sha256 checked; its
interpreter start and imports, ~0.2 s, included), and as it runs by default: a child of the warm step
runner (``, warm runner`` rows). Raw publish: cp of the same file; output-publish: the step program into
a results folder (fsync'd, renamed into place), both ways. Peak RSS of each step process.
Targets (issue 7): >= 90% of raw throughput, RSS flat (<= 100 MB).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, peak_rss_mib

from c2d.settings import EngineSettings
from workflows.local.cgroups import StepCgroup
from workflows.local.interpret import Step
from workflows.local.sandbox import Bind
from workflows.local.warm import WarmRunner
from workflows.spec import AlgorithmInput, DatasetInput, FetchSpec, InputFile, StoreAccess

DID = "did:op:" + "5a" * 32


def sendfile_server(path: Path) -> tuple[str, threading.Event]:
    """A minimal HTTP/1.0 server answering every GET with ``path`` through sendfile()."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()
    size = path.stat().st_size

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(f"HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
            with open(path, "rb") as handle:
                conn.sendfile(handle)

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
        listener.close()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}/big.bin", stop


def timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS MiB of that process) of one run, which must succeed. GNU time reports the peak
    (a wait4 from this process would count the fork of this interpreter, not the program)."""
    with tempfile.NamedTemporaryFile("r") as report:
        start = time.perf_counter()
        done = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", report.name, *argv], env=env, capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        subprocess.run(["sync"], check=False)  # untimed: the next run does not start with this one's writeback
        if done.returncode != 0:
            raise SystemExit(f"{argv[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
        return seconds, int(report.read().split()[-1]) / 1024


def fresh(folder: Path, *, create: bool = True) -> None:
    """Remove ``folder`` (this program's output of the previous round) right before a timed run. Every
    timed run is followed by a sync (see :func:`timed`), so every run starts the same way: nothing left
    to write back, and its previous 1 GiB just removed. (Before, input-fetch started right after the
    write-back of curl's 1 GiB and curl after next to none; started that way, input-fetch measured ~50%
    slower on this VM, curl no slower.)"""
    shutil.rmtree(folder, ignore_errors=True)
    if create:
        folder.mkdir()


class WarmSteps:
    """The engine's default path: a step program run as a child of the warm step runner, confined with
    Landlock to the given folders (``binds``: host folder, path inside). Peak RSS: the child's high-water
    mark, pages shared with the runner included, sampled every 20 ms."""

    def __init__(self, work: Path) -> None:
        self.engine = EngineSettings()
        self.work = work
        self.runner = WarmRunner(self.engine, REPO, (work,), ())
        self.started = self.runner.start(work / "stepserver.log")

    def timed(self, command: list[str], env: dict[str, str], binds: list[Bind]) -> tuple[float, float]:
        step = Step.bare("bench", "configure", self.engine.step_image, ["python", "-m", *command], env=env, egress=True)
        tmp, log = self.work / "warm-tmp", self.work / "warm.log"
        tmp.mkdir(exist_ok=True)
        start = time.perf_counter()
        process = self.runner.launch(step, binds, tmp, log, {}, StepCgroup())
        peak = 0.0
        while process.poll() is None:
            with contextlib.suppress(OSError):  # it may have exited since poll()
                peak = max(peak, peak_rss_mib(process.pid))
            process.wait_exit(0.02)
        seconds = time.perf_counter() - start
        subprocess.run(["sync"], check=False)
        if process.wait() != 0:
            raise SystemExit(f"{command[0]} in the warm runner failed: {log.read_text()[-2000:]}")
        return seconds, peak

    def close(self) -> None:
        self.runner.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=9,
        help="timed rounds after the warm-up one, of which the median is kept (disk write-back speed varies)",
    )
    args = parser.parse_args()
    size = int(args.gib * 1024**3)
    work = Path(tempfile.mkdtemp(prefix="c2d-bench-staging-", dir=REPO / ".cache"))
    warm: WarmSteps | None = None
    try:
        source = work / "big.bin"
        print(f"writing a {size / 1024**3:.1f} GiB source file ...", flush=True)
        digest = hashlib.sha256()
        block = os.urandom(1 << 20)
        with open(source, "wb") as out:
            for _ in range(size >> 20):
                out.write(block)
                digest.update(block)
        url, stop = sendfile_server(source)
        packages = sysconfig.get_paths()["purelib"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": f"{REPO}:{packages}"}
        python = [sys.executable, "-S"]
        runs: dict[str, list[tuple[float, float]]] = {}
        warm = WarmSteps(work)
        if not warm.started:
            print("no warm step runner here (it needs Landlock ABI >= 6): its rows are left out")
        for run in range(args.rounds + 1):  # the first warms the page cache; the median of the others is kept
            results: dict[str, tuple[float, float]] = {}
            fresh(work / "curl")
            results["raw fetch (curl)"] = timed(["curl", "-sf", "-o", str(work / "curl" / "big.bin"), url])
            spec = FetchSpec(
                datasets=[DatasetInput(did=DID, files=[InputFile(url=url, checksum=digest.hexdigest())])],
                algorithm=AlgorithmInput(raw_code="pass"),
                max_bytes=2 * size,
                access=StoreAccess(allow_hosts=[url.split("/")[2]]),
            )
            fresh(work / "data", create=False)
            fetch_env = env | {"C2D_FETCH_SPEC": spec.model_dump_json()}
            results["input-fetch"] = timed([*python, "-m", "steps.fetch", "--data", str(work / "data")], fetch_env)
            if warm.started:
                fresh(work / "warm")
                results["input-fetch, warm runner"] = warm.timed(
                    ["steps.fetch", "--data", "/data"], fetch_env, [(work / "warm", "/data", False, None)]
                )
            outputs = work / "data" / "outputs"
            os.replace(work / "data" / "inputs" / DID.removeprefix("did:op:") / "0", outputs / "big.bin")
            fresh(work / "cp")
            results["raw publish (cp + sync)"] = timed(
                ["sh", "-c", f"cp {outputs / 'big.bin'} {work / 'cp'} && sync -f {work / 'cp' / 'big.bin'}"]
            )
            fresh(work / "store")
            results["output-publish"] = timed(
                [
                    *python,
                    "-m",
                    "steps.publish",
                    "--data",
                    str(work / "data"),
                    "--job-id",
                    "b",
                    "--target",
                    str(work / "store"),
                ],
                env,
            )
            if warm.started:  # it writes its log into the data volume too, as in the engine
                store = work / "store-warm"
                fresh(store)
                results["output-publish, warm runner"] = warm.timed(
                    ["steps.publish", "--data", "/data", "--job-id", "b", "--target", str(store)],
                    {},
                    [(work / "data", "/data", False, None), (store, str(store), False, None)],
                )
            if run == 0:
                print("warm-up done; measuring ...", flush=True)
                continue
            for name, figures in results.items():
                runs.setdefault(name, []).append(figures)
        stop.set()
        mib = size / 1024**2
        results = {name: sorted(figures)[len(figures) // 2] for name, figures in runs.items()}
        for name, (seconds, rss) in results.items():
            spread = f"{min(f[0] for f in runs[name]):.2f}-{max(f[0] for f in runs[name]):.2f} s"
            print(f"{name:28} {mib / seconds:8.0f} MiB/s   {seconds:6.2f} s ({spread})   peak RSS {rss:5.0f} MiB")
        fetch = results["raw fetch (curl)"][0] / results["input-fetch"][0]
        publish_ratio = results["raw publish (cp + sync)"][0] / results["output-publish"][0]
        print(f"input-fetch at {fetch:.0%} of raw, output-publish at {publish_ratio:.0%} of raw (target >= 90%)")
        if warm.started:
            fetch = results["raw fetch (curl)"][0] / results["input-fetch, warm runner"][0]
            publish_ratio = results["raw publish (cp + sync)"][0] / results["output-publish, warm runner"][0]
            print(f"in the warm step runner: input-fetch at {fetch:.0%}, output-publish at {publish_ratio:.0%} of raw")
    finally:
        if warm is not None:
            warm.close()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
