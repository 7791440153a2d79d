"""Scale of the argo engine: N concurrent jobs through the real Argo controller on the kwok cluster.

    .venv/bin/python bench/argo_scale.py [--jobs 1000]      (needs `make cluster-up`)

Writes N job rows (as the provider does) into a fresh embedded Postgres, runs ``c2d engine``
(dispatcher + watcher) as its own process, and observes the cluster independently with its own
watch. Prints: submission rate, mirror lag of the final state (instant the observer saw the
Workflow finish -> instant Postgres recorded the job's final status) p50/p99, lost transitions
(Workflows whose final phase never reached Postgres; must be 0), out-of-order status histories,
the watcher's own work (time to mirror one Workflow event, summed and per event; releases of
finished Workflows still waiting and failed, from the engine's /metrics) and the engine process's
peak RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from common import REPO, free_port, percentile, workspace

from c2d.db.jobs import JobStore
from c2d.db.pool import open_pool
from c2d.settings import ChainSettings, PostgresSettings, load_settings
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from tests.scrape import Samples
from tests.workflows.jobs import job_spec, make_environment, new_job
from workflows.argo.kube import KubeClient, KubeConfig
from workflows.argo.watcher import SELECTOR
from workflows.builder import build_workflow
from workflows.exceptions import KubeApiError
from workflows.registry import BuildOptions
from workflows.templates import default_registry

CLUSTER = REPO / ".cache" / "cluster" / "run"
NAMESPACE = "c2d"


class Observer:
    """Its own list+watch: when did each Workflow finish, as seen from outside the engine."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.finished: dict[str, float] = {}
        self.phases: dict[str, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            items, version = self.client.list_workflows(SELECTOR)
            for item in items:
                self._see(item)
            try:
                for event in self.client.watch_workflows(SELECTOR, version, 30):
                    self._see(event.get("object") or {})
                    if self.stop.is_set():
                        return
            except KubeApiError:  # relist, as the watcher does
                continue

    def _see(self, workflow: dict[str, Any]) -> None:
        phase = (workflow.get("status") or {}).get("phase")
        name = (workflow.get("metadata") or {}).get("name")
        if phase in ("Succeeded", "Failed", "Error") and name and name not in self.finished:
            self.finished[name] = time.time()
            self.phases[name] = str(phase)


def rss_kib(pid: int) -> tuple[int, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(value.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    kubeconfig = CLUSTER / "admin.kubeconfig"
    if not kubeconfig.is_file():
        print("no cluster: run `make cluster-up` first", file=sys.stderr)
        return 2
    subprocess.run(
        [str(REPO / ".cache/cluster/bin/kubectl"), "--kubeconfig", str(kubeconfig), "apply", "-k", "manifests/dev"],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    with workspace("argo") as data:
        lost = measure(args, kubeconfig, data)
        if lost:
            raise SystemExit(f"{lost} jobs lost: their Workflow finished, Postgres does not say so")
    return 0


def measure(args: argparse.Namespace, kubeconfig: Path, data: Path) -> int:
    """The number of lost transitions."""
    settings = load_settings(
        data_dir=data, postgres=PostgresSettings(port=free_port()), chain=ChainSettings(port=free_port())
    )
    # generous limits: the scale of the controller is measured here, not deadlines on a saturated machine
    env = make_environment(max_job_duration=3600, step_timeout=3600)
    options = BuildOptions(namespace=NAMESPACE, volume="emptyDir", results_target="pvc")
    client = KubeClient(KubeConfig.load(kubeconfig), NAMESPACE)
    with Stack(settings) as stack, open_pool(database_dsn(stack.settings), max_size=4) as pool:
        store = JobStore(pool)
        print(f"writing {args.jobs} job rows ...", flush=True)
        names = []
        for _ in range(args.jobs):
            spec = job_spec("print(1)", ["https://example.com/a.csv"], job_id=secrets.token_hex(16))
            workflow = build_workflow(spec, env, default_registry(), options).to_dict()
            store.create(new_job(spec, env, workflow, "argo"))
            names.append(spec.job_id)
        observer = Observer(client)
        threading.Thread(target=observer.run, daemon=True).start()
        engine_env = {
            **os.environ,
            "C2D_DATA_DIR": str(data),
            "C2D_POSTGRES__DSN": database_dsn(stack.settings),
            "C2D_ENGINE__KIND": "argo",
            "C2D_ENGINE__NAMESPACE": NAMESPACE,
            "C2D_ENGINE__ARGO__KUBECONFIG": str(kubeconfig),
            "C2D_ENGINE__ARGO__VOLUME": "emptyDir",
            "C2D_ENGINE__ARGO__SUBMIT_BATCH": "100",
            "C2D_METRICS__ENGINE_PORT": str(metrics_port := free_port()),
        }
        log = (data / "engine.log").open("wb")
        engine = subprocess.Popen([str(REPO / ".venv/bin/c2d"), "engine"], env=engine_env, stdout=log, stderr=log)
        started = time.time()
        peak = 0
        try:
            last = ""
            while time.time() - started < args.timeout:
                rss, hwm = rss_kib(engine.pid)
                peak = max(peak, hwm)
                with pool.connection() as conn:
                    done, submitted = conn.execute(
                        "SELECT count(*) FILTER (WHERE date_finished IS NOT NULL), "
                        "count(*) FILTER (WHERE details ? 'submittedAt') FROM jobs"
                    ).fetchone()  # type: ignore[misc]
                elapsed = time.time() - started
                line = f"  {elapsed:6.1f}s submitted {submitted}/{args.jobs} finished {done} rss {rss // 1024} MiB"
                if line.split("rss")[0] != last:
                    print(line, flush=True)
                    last = line.split("rss")[0]
                if done == args.jobs:
                    break
                time.sleep(2)
            watcher = Samples.parse(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).text)
        finally:
            engine.terminate()
            engine.wait(timeout=60)
            observer.stop.set()
        with pool.connection() as conn:
            rows = conn.execute(
                "SELECT job_id, status, date_finished, details->>'submittedAt' FROM jobs ORDER BY date_created"
            ).fetchall()
            history = conn.execute(
                "SELECT job_id, array_agg(status ORDER BY id) FROM job_events GROUP BY job_id"
            ).fetchall()
        submit_times = sorted(datetime.fromisoformat(str(r[3])).timestamp() for r in rows if r[3])
        lags = []
        lost = failed = 0
        for job_id, status, finished, _ in rows:
            seen = observer.finished.get(f"c2d-{job_id}")
            phase = observer.phases.get(f"c2d-{job_id}")
            failed += phase is not None and phase != "Succeeded"
            # lost: the Workflow ended but Postgres does not say so (or says the opposite)
            if seen is not None and (finished is None or (status == 70) != (phase == "Succeeded")):
                lost += 1
            if seen is not None and isinstance(finished, datetime):
                lags.append(finished.replace(tzinfo=finished.tzinfo or UTC).timestamp() - seen)
        disorder = sum(1 for _, statuses in history if isinstance(statuses, list) and statuses != sorted(statuses))
        span = (submit_times[-1] - submit_times[0]) if len(submit_times) > 1 else float("nan")
        print()
        print(f"jobs                       {args.jobs}")
        rate = len(submit_times) / span
        print(f"submitted                  {len(submit_times)} in {span:.1f} s = {rate:.1f} workflows/s")
        print(f"all finished after         {time.time() - started:.1f} s")
        p50, p99 = percentile(lags, 0.5) * 1000, percentile(lags, 0.99) * 1000
        print(f"final-state mirror lag     p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(lags)} jobs)")
        print(f"workflows that failed      {failed}  (mirrored as failures; not lost)")
        print(f"lost transitions           {lost}  (workflow finished, its final state not in Postgres)")
        print(f"out-of-order histories     {disorder}")
        handled = watcher.value("c2d_watcher_handle_seconds_count")
        busy = watcher.value("c2d_watcher_handle_seconds_sum")
        each = busy / handled * 1000 if handled else float("nan")
        print(f"watcher mirror work        {busy:.1f} s for {handled:.0f} Workflow events = {each:.1f} ms each")
        waiting = watcher.value("c2d_watcher_releases_waiting")
        refused = watcher.value("c2d_engine_errors_total", engine="argo", kind="release")
        print(f"releases waiting, failed   {waiting:.0f}, {refused:.0f}  (finalizer + fetch Secret of finished jobs)")
        print(f"engine peak RSS            {peak / 1024:.0f} MiB")
        print("cleaning up the workflows ...", flush=True)
        for job_id in names:
            with contextlib.suppress(KubeApiError):
                client.delete_workflow(f"c2d-{job_id}")
    client.close()
    return lost


if __name__ == "__main__":
    sys.exit(main())
