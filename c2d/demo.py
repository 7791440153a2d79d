"""``c2d demo``: run one real compute job on the embedded stack and print its result.

Until the provider API lands (issue 4) the job is queued the way the provider will queue it: a job row
holding the rendered Workflow, run by the local engine in its sandboxes. The dataset is served by a
stand-in for the data owner's file server on 127.0.0.1; the algorithm is raw Python code.
"""

from __future__ import annotations

import functools
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from c2d.db.jobs import JobStore, NewJob
from c2d.db.pool import open_pool
from c2d.exceptions import C2DError
from c2d.settings import Settings
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack

Echo = Callable[[str], None]
DEMO_OWNER = "0x" + "00" * 19 + "d0"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def _serve(folder: Path, host: str) -> Iterator[str]:
    server = ThreadingHTTPServer((host, 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()


def run_demo(settings: Settings, echo: Echo, timeout: float = 120) -> None:
    from workflows.builder import build_workflow
    from workflows.local.engine import LocalEngine
    from workflows.registry import BuildOptions, default_registry
    from workflows.spec import AlgorithmContainer, AlgorithmInput, DatasetInput, FetchSpec, InputFile, JobSpec

    data = resources.files("c2d") / "demo_data"
    environment = settings.environments[0]
    with Stack(settings, echo) as stack, resources.as_file(data) as folder, _serve(folder, settings.host) as url:
        dsn = database_dsn(stack.settings)
        with open_pool(dsn, max_size=4) as pool, LocalEngine(settings, pool, dsn):
            store = JobStore(pool)
            job_id = secrets.token_hex(16)
            did = "did:op:" + secrets.token_hex(32)
            spec = JobSpec(
                job_id=job_id,
                owner=DEMO_OWNER,
                environment=environment.id,
                fetch=FetchSpec(
                    datasets=[DatasetInput(did=did, files=[InputFile(url=f"{url}/weather.csv")])],
                    algorithm=AlgorithmInput(raw_code=(folder / "summary.py").read_text()),
                    max_bytes=environment.disk_bytes,
                ),
                container=AlgorithmContainer(image="python", tag="3.11-slim", entrypoint="python $ALGO"),
            )
            options = BuildOptions(
                results_host_dir=str(settings.store_dir / job_id), namespace=settings.engine.namespace
            )
            workflow = build_workflow(spec, environment, default_registry(settings.engine.step_modules), options)
            store.create(
                NewJob(
                    job_id=job_id,
                    owner=DEMO_OWNER,
                    environment=environment.id,
                    engine="local",
                    did=did,
                    input_dids=[did],
                    algo_did="raw",
                    workflow_name=spec.workflow_name,
                    workflow=workflow.to_dict(),
                )
            )
            echo(f"job {job_id} queued (environment {environment.id}, dataset {did[:20]}…)")
            _follow(store, job_id, echo, timeout)
            _show(settings, store, job_id, echo)


def _follow(store: JobStore, job_id: str, echo: Echo, timeout: float) -> None:
    seen = 0
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        events = store.events(job_id)
        for event in events[seen:]:
            echo(f"  status {event.status:>2}  {event.status_text.strip()}")
        seen = len(events)
        job = store.get(job_id)
        if job is not None and job.finished:
            if job.status != 70:
                raise C2DError(f"the demo job ended with status {job.status}: {job.status_text}")
            return
        time.sleep(0.1)
    raise C2DError(f"the demo job did not finish within {timeout:.0f} s")


def _show(settings: Settings, store: JobStore, job_id: str, echo: Echo) -> None:
    job = store.get(job_id)
    assert job is not None
    folder = settings.store_dir / job_id
    for result in job.results or []:
        echo(f"  result {result['filename']} ({result['type']}, {result['filesize']} bytes)")
    summary = json.loads((folder / "outputs" / "summary.json").read_text())
    echo("result summary.json:")
    for line in json.dumps(summary, indent=2).splitlines():
        echo(f"  {line}")
    echo(f"results and logs kept in {folder}")
