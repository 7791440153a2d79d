"""Per-job overhead and throughput of the local engine (the embedded default), on this machine.

    .venv/bin/python bench/local_jobs.py [--jobs 40] [--seconds 60] [--parallel 4]

A throw-away embedded stack, a loopback file server with a tiny dataset, the local engine. Jobs are
written to Postgres exactly as the provider does once a start request is validated (order checked,
Workflow rendered); a job's overhead is ``date_finished - date_created`` of its row: validated order →
results listed, everything in between (claim, input-fetch, the trivial algorithm, output-publish, each
in its sandbox, every status mirrored). Printed next to the floor measured in the same run: three bare
sandboxed process starts (bubblewrap with the same flags, running /bin/true), the least a three-step
job can cost. Throughput: trivial jobs finished per second over ``--seconds`` with the queue kept
full, then every job must end 70 (lost or stuck jobs are counted; the exit code is 1 if any); with it,
the whole machine's CPU time per job finished in that window (every process and the kernel: engine,
step runner, sandboxes, Postgres, this driver) and the rate that allows on this machine's cores — the
ceiling a saturated machine runs into.
Targets (issue 7): overhead p50 <= 0.3 s, p95 <= 0.6 s; throughput >= 20 jobs/s.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    bench_settings,
    child_pids,
    file_server,
    machine_cpu_seconds,
    peak_rss_mib,
    percentile,
    process_cmdline,
    process_cpu_seconds,
    processes_named,
    workspace,
)

from c2d.db.jobs import JobStore
from c2d.db.pool import Pool, open_pool
from c2d.settings import EngineSettings, Settings
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from tests.workflows.jobs import job_spec, make_environment, new_job, render
from workflows.local.engine import LocalEngine
from workflows.local.interpret import Step
from workflows.local.sandbox import bwrap_command, resolve_runtime, step_environment

ALGORITHM = "open('/data/outputs/out.txt', 'w').write('ok')"


def floor_seconds(settings: Settings, repeats: int = 15) -> float:
    """Median wall time of three bare sandboxed starts (same bubblewrap flags, /bin/true)."""
    step = Step.bare("floor", "algorithm", "python", ["/bin/true"])
    runtime = resolve_runtime("python", settings.engine)
    argv = bwrap_command(settings.engine.bwrap, step, runtime, []).argv  # no descriptor: no seccomp filter
    env = step_environment(step, runtime)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(3):
            subprocess.run(argv, env=env, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Submitter:
    def __init__(self, settings: Settings, store: JobStore, engine: LocalEngine, url: str) -> None:
        self.settings, self.store, self.engine, self.url = settings, store, engine, url
        self.env = make_environment(id="local-cpu")

    def submit(self) -> str:
        spec = job_spec(ALGORITHM, [self.url])
        workflow = render(spec, self.env, self.settings.store_dir)
        self.store.create(new_job(spec, self.env, workflow, "local"))
        self.engine.wake()
        return spec.job_id


def _finished(pool: Pool, job_ids: list[str]) -> dict[str, tuple[int, float, bool]]:
    """job id -> (status, seconds from created to finished, results listed) for the finished ones."""
    with pool.connection() as conn:
        rows = conn.execute(
            "SELECT job_id, status, extract(epoch FROM date_finished - date_created), "
            "jsonb_array_length(coalesce(results, '[]'::jsonb)) > 0 "
            "FROM jobs WHERE job_id = ANY(%s) AND date_finished IS NOT NULL",
            (job_ids,),
        ).fetchall()
    return {str(r[0]): (int(str(r[1])), float(str(r[2])), bool(r[3])) for r in rows}


def overhead(pool: Pool, submitter: Submitter, jobs: int) -> list[float]:
    """One job at a time: the engine is idle when each arrives."""
    latencies = []
    for _ in range(jobs):
        job_id = submitter.submit()
        end = time.monotonic() + 60
        while time.monotonic() < end:
            done = _finished(pool, [job_id]).get(job_id)
            if done:
                status, seconds, listed = done
                if status != 70 or not listed:
                    raise SystemExit(f"job {job_id} ended {status} (results listed: {listed})")
                latencies.append(seconds)
                break
            time.sleep(0.005)
        else:
            raise SystemExit(f"job {job_id} did not finish within 60 s")
    return latencies


CPU_PARTS = {
    "engine": "engine + this driver (it renders each Workflow, as the provider does)",
    "warm": "warm step runners (input-fetch, output-publish)",
    "postgres": "Postgres",
    # bubblewrap's own init process is never waited for by bubblewrap (it ends with its pid namespace), so
    # a sandbox's CPU time cannot be read from this process's children: it is in the rest
    "other": "the rest: the algorithm's sandboxes (bubblewrap, sh, tee, python), kernel threads",
}


def cpu_snapshot(settings: Settings, engine: LocalEngine) -> dict[str, float]:
    """CPU seconds spent so far by the machine and by each part of the node (see CPU_PARTS)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    runners = [r.proc.pid for r in (engine.warm.all() if engine.warm is not None else []) if r.proc is not None]
    postmasters = [pid for pid in processes_named("postgres") if str(settings.data_dir) in process_cmdline(pid)]
    return {
        "machine": machine_cpu_seconds(),
        "engine": own.ru_utime + own.ru_stime,
        "warm": sum(process_cpu_seconds(pid) for runner in runners for pid in child_pids(runner)),
        "postgres": sum(
            process_cpu_seconds(pid) for pid in postmasters + [c for p in postmasters for c in child_pids(p)]
        ),
    }


@dataclass
class Throughput:
    rate: float  # jobs/s finished during the window
    cpu_per_job: dict[str, float]  # seconds of CPU per job finished in the window: "machine" and CPU_PARTS
    submitted: int
    ok: int  # finished 70 with results listed
    failed: int
    lost: int  # not finished 2 minutes after the window


def throughput(pool: Pool, submitter: Submitter, seconds: float, backlog: int) -> Throughput:
    submitted: list[str] = []
    start, before = time.monotonic(), cpu_snapshot(submitter.settings, submitter.engine)
    while time.monotonic() - start < seconds:
        done = _finished(pool, submitted[-4 * backlog :]) if submitted else {}
        pending = sum(1 for job_id in submitted[-4 * backlog :] if job_id not in done)
        for _ in range(max(0, backlog - pending)):
            submitted.append(submitter.submit())
        time.sleep(0.05)  # the backlog covers it; polling faster only takes CPU from the jobs measured
    finished_in_window = len(_finished(pool, submitted))
    after = cpu_snapshot(submitter.settings, submitter.engine)
    used = {part: after[part] - before[part] for part in after}
    used["other"] = used["machine"] - sum(value for part, value in used.items() if part != "machine")
    per_job = {part: value / max(1, finished_in_window) for part, value in used.items()}
    drain_end = time.monotonic() + 120
    while time.monotonic() < drain_end and len(_finished(pool, submitted)) < len(submitted):
        time.sleep(0.2)
    final = _finished(pool, submitted)
    ok = sum(1 for status, _, listed in final.values() if status == 70 and listed)
    return Throughput(
        rate=finished_in_window / seconds,
        cpu_per_job=per_job,
        submitted=len(submitted),
        ok=ok,
        failed=len(final) - ok,
        lost=len(submitted) - len(final),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=40, help="sequential jobs for the overhead figures")
    parser.add_argument("--seconds", type=float, default=60, help="length of the throughput window")
    parser.add_argument("--parallel", type=int, default=4, help="C2D_ENGINE__MAX_PARALLEL_JOBS")
    args = parser.parse_args()
    with workspace("jobs") as work:
        run = measure(args, work)
        if run.failed or run.lost:
            raise SystemExit(f"{run.failed} jobs failed, {run.lost} lost or stuck")
    return 0


def measure(args: argparse.Namespace, work: Path) -> Throughput:
    data = work / "served"
    data.mkdir()
    (data / "data.csv").write_text("a,b\n1,2\n")
    with file_server(data) as url:
        settings = bench_settings(
            work / "stack", [url.removeprefix("http://")], engine=EngineSettings(max_parallel_jobs=args.parallel)
        )
        print("starting a throw-away stack ...", flush=True)
        with Stack(settings) as stack, open_pool(database_dsn(stack.settings), max_size=8) as pool:
            floor = floor_seconds(settings)
            with LocalEngine(settings, pool, database_dsn(settings)) as engine:
                submitter = Submitter(settings, JobStore(pool), engine, f"{url}/data.csv")
                overhead(pool, submitter, 3)  # warm-up (page cache, first imports)
                latencies = overhead(pool, submitter, args.jobs)
                p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
                print(f"floor (3 bare sandboxed starts)   {floor * 1000:7.1f} ms")
                for name, value, target in (("p50", p50, 300), ("p95", p95, 600)):
                    ratio = f"{value / floor:.1f}x floor; target <= {target}"
                    print(f"per-job overhead {name}              {value * 1000:7.1f} ms  ({ratio})")
                print(f"running {args.seconds:.0f} s of jobs, {args.parallel} at a time ...", flush=True)
                run = throughput(pool, submitter, args.seconds, 2 * args.parallel)
                cores = os.cpu_count() or 1
                ceiling = f"{cores} cores: at most {cores / run.cpu_per_job['machine']:.1f} jobs/s"
                print(f"throughput                        {run.rate:7.1f} jobs/s  (target >= 20)")
                print(f"machine CPU per job               {run.cpu_per_job['machine'] * 1000:7.1f} ms  ({ceiling})")
                for part, label in CPU_PARTS.items():
                    print(f"  {run.cpu_per_job[part] * 1000:5.1f} ms  {label}")
                print(f"jobs submitted / ok / failed      {run.submitted} / {run.ok} / {run.failed}")
                print(f"lost or stuck                     {run.lost}")
                print(f"engine process peak RSS           {peak_rss_mib():7.0f} MiB")
    return run


if __name__ == "__main__":
    sys.exit(main())
