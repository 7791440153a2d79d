"""GET /api/services/compute (job status) under load, next to a bare uvicorn hello endpoint.

    .venv/bin/python bench/status_api.py [--seconds 10] [--connections 64] [--load-jobs 50] [--signed 30000]

A throw-away embedded stack with 500 finished jobs in Postgres, the real provider (``c2d provider``:
API + indexer + local engine, one process, as deployed) and, in the same run, a bare uvicorn serving a
raw ASGI "hello" (the ceiling of one uvicorn process here). wrk (Debian's package) drives each from a
second process on loopback; the status also with the owner's EIP-55 address (what ocean.js polls with).
Then signed status requests (as ocean.py sends them; each from a wallet of
its own, so that concurrent requests never race on one wallet's nonces: every request verifies a
signature, writes a nonce and reads a not yet cached owner). Then the load case: 200 concurrent clients
polling status while 50 jobs run through the engine (each client polls every 0.1 s: wrk's delay()):
errors, latency, and every job's final state.
Targets (issue 7): status >= 50% of bare requests/s, p99 <= 25 ms; under load no errors.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, bench_settings, file_server, free_port, workspace
from eth_account import Account
from web3 import Web3

from c2d.chain.signing import sign_message
from c2d.db.jobs import JobStore
from c2d.db.pool import open_pool
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from tests.workflows.jobs import job_spec, make_environment, new_job, render

OWNER = "0x" + "ab" * 20
HELLO = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})
"""


def wait_http(url: str, timeout: float = 60) -> None:
    import urllib.request

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def wrk(url: str, seconds: float, connections: int, script: Path | None = None) -> tuple[float, float, int]:
    """(requests/s, p99 ms, errors) from one wrk run (one thread: the other core is the server's), with an
    optional Lua ``script`` (see :func:`polling_script`)."""
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:.0f}s",
            "--latency",
            *(["-s", str(script)] if script else []),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    if errors:
        print("  wrk:", " ".join(line.strip() for line in out.splitlines() if "errors" in line), flush=True)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99_ms, errors + (int(non2xx.group(1)) if non2xx else 0)


def polling_script(folder: Path, think_ms: int) -> Path:
    """A wrk script that has each connection wait ``think_ms`` between its requests (a polling client)."""
    script = folder / "think.lua"
    script.write_text(f"function delay()\n  return {think_ms}\nend\n")
    return script


def signed_script(folder: Path, count: int) -> Path:
    """A wrk script sending ``count`` signed status requests, each from a new wallet (nonce 1), in order; past
    ``count`` it repeats the last one, which is refused (a replay) and counted as an error."""
    paths = folder / "signed.txt"
    with paths.open("w") as out:
        for _ in range(count):
            account = Account.create()
            signature = sign_message(account.key.hex(), f"{account.address}1")  # owner + jobId + documentId + nonce
            out.write(f"/api/services/compute?consumerAddress={account.address}&nonce=1&signature={signature}\n")
    script = folder / "signed.lua"
    script.write_text(
        f"local paths = {{}}\nfor line in io.lines('{paths}') do paths[#paths + 1] = line end\n"
        "local i = 0\nrequest = function()\n  i = math.min(i + 1, #paths)\n"
        "  return wrk.format('GET', paths[i])\nend\n"
    )
    return script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--load-jobs", type=int, default=50)
    parser.add_argument("--signed", type=int, default=30000, help="signed requests prepared (0: none)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk not found: apt-get install -y wrk (make bench installs it)", file=sys.stderr)
        return 2
    with workspace("status") as work:
        failed = measure(args, work)
        if failed:
            raise SystemExit(failed)
    return 0


def measure(args: argparse.Namespace, work: Path) -> str:
    """What failed ("" if nothing)."""
    data = work / "served"
    data.mkdir()
    (data / "data.csv").write_text("a,b\n1,2\n")
    env = make_environment(id="local-cpu")
    with file_server(data) as url:
        settings = bench_settings(work / "stack", [url.removeprefix("http://")])
        print("starting a throw-away stack ...", flush=True)
        with Stack(settings) as stack, open_pool(database_dsn(stack.settings), max_size=4) as pool:
            store = JobStore(pool)
            for index in range(500):  # other consumers' jobs, so the lookup is not trivially small
                spec = job_spec(
                    "pass", [f"{url}/data.csv"], owner=OWNER if index == 0 else "0x" + secrets.token_hex(20)
                )
                store.create(new_job(spec, env, {}, "none"))
                store.transition(spec.job_id, 70, source="bench", finished=True, results=[])
                if index == 0:
                    target = spec.job_id
            child_env = {
                **os.environ,
                "C2D_DATA_DIR": str(settings.data_dir),
                "C2D_POSTGRES__PORT": str(settings.postgres.port),
                "C2D_CHAIN__PORT": str(settings.chain.port),
                "C2D_PROVIDER__PORT": str(settings.provider.port),
                "C2D_FETCH__ALLOW_HOSTS": f'["{url.removeprefix("http://")}"]',
            }
            hello_port = free_port()
            hello_dir = work / "hello"
            hello_dir.mkdir()
            (hello_dir / "hello.py").write_text(HELLO)
            hello = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "hello:app", "--port", str(hello_port), "--log-level", "warning"],
                cwd=hello_dir,
            )
            provider = subprocess.Popen([str(REPO / ".venv/bin/c2d"), "provider"], env=child_env)
            try:
                status_url = f"{settings.provider_url}/api/services/compute?consumerAddress={OWNER}&jobId={target}"
                wait_http(f"http://127.0.0.1:{hello_port}/")
                wait_http(status_url)
                script = signed_script(work, args.signed) if args.signed else None
                bare = wrk(f"http://127.0.0.1:{hello_port}/", args.seconds, args.connections)
                ours = wrk(status_url, args.seconds, args.connections)
                js = wrk(status_url.replace(OWNER, Web3.to_checksum_address(OWNER)), args.seconds, args.connections)
                print(f"bare uvicorn hello            {bare[0]:8.0f} req/s   p99 {bare[1]:6.1f} ms")
                print(
                    f"GET compute status            {ours[0]:8.0f} req/s   p99 {ours[1]:6.1f} ms   "
                    f"({ours[0] / bare[0] * 100:.0f}% of bare; target >= 50%, p99 <= 25 ms)   errors {ours[2]}"
                )
                print(
                    f"  EIP-55 address (ocean.js)   {js[0]:8.0f} req/s   p99 {js[1]:6.1f} ms   "
                    f"({js[0] / bare[0] * 100:.0f}% of bare)   errors {js[2]}"
                )
                signed = (0.0, 0.0, 0)
                if script is not None:  # a few seconds: the prepared requests must last
                    signed = wrk(settings.provider_url, 5, args.connections, script)
                    print(
                        f"GET compute status, signed    {signed[0]:8.0f} req/s   p99 {signed[1]:6.1f} ms   "
                        f"(each: a signature, a nonce written, an owner read)   errors {signed[2]}"
                    )
                jobs = []
                for _ in range(args.load_jobs):
                    spec = job_spec("open('/data/outputs/o', 'w').write('1')", [f"{url}/data.csv"], owner=OWNER)
                    store.create(new_job(spec, env, render(spec, env, settings.store_dir), "local"))
                    jobs.append(spec.job_id)
                started = time.monotonic()
                load = wrk(status_url, max(args.seconds, 15), 200, polling_script(work, 100))
                end = time.monotonic() + 120
                finished = ok = 0
                while time.monotonic() < end:
                    with pool.connection() as conn:
                        row = conn.execute(
                            "SELECT count(*) FILTER (WHERE date_finished IS NOT NULL), "
                            "count(*) FILTER (WHERE status = 70) FROM jobs WHERE job_id = ANY(%s)",
                            (jobs,),
                        ).fetchone()
                    assert row is not None
                    finished, ok = int(str(row[0])), int(str(row[1]))
                    if finished == len(jobs):
                        break
                    time.sleep(0.5)
                print(
                    f"200 clients polling every 0.1 s while {len(jobs)} jobs run: {load[0]:.0f} req/s, "
                    f"p99 {load[1]:.1f} ms, errors {load[2]}, jobs finished {finished}/{len(jobs)} ({ok} ok) "
                    f"after {time.monotonic() - started:.0f} s"
                )
            finally:
                for proc in (provider, hello):
                    proc.terminate()
                    proc.wait(30)
    failures = []
    if ours[2] or js[2]:
        failures.append(f"{ours[2] + js[2]} errors under full load")
    if signed[2]:
        failures.append(f"{signed[2]} signed requests refused or failed (more than --signed sent?)")
    if load[2]:
        failures.append(f"{load[2]} errors while jobs ran")
    if finished != len(jobs):
        failures.append(f"{len(jobs) - finished} of {len(jobs)} jobs not finished")
    return "; ".join(failures)


if __name__ == "__main__":
    sys.exit(main())
