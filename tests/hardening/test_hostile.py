"""Hostile algorithms all at once, next to an honest job: each is contained and reported with a clear
status, the honest job is unaffected, the API keeps answering, nothing is left running."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from provider.app import create_app
from tests.fileserver import FileServer
from tests.helpers import algorithm_processes
from tests.workflows.conftest import Jobs, engine, jobs  # noqa: F401 (fixtures)
from tests.workflows.jobs import job_spec, make_environment
from workflows.local.engine import LocalEngine

ENV = make_environment(max_job_duration=6, max_output_files=200)
HOSTILE = {
    "memory bomb": "b = []\nwhile True:\n    b.append(bytearray(16 * 1024**2))",
    "fork bomb": "import os\nwhile True:\n    os.fork()",
    "endless loop": "while True:\n    pass",
    "disk filler": "f = open('/data/outputs/fill', 'wb')\nwhile True:\n    f.write(b'0' * 1024**2)",
    "a million files": "for i in range(10**6):\n    open(f'/data/outputs/f{i}', 'w').close()",
    "hostile outputs": (
        "import os\n"
        "os.mkfifo('/data/outputs/pipe')\n"  # publish must not block on it
        "os.symlink('/data/inputs', '/data/outputs/link')\n"
        "os.symlink('../../../../etc/shadow', '/data/outputs/up')\n"
        "open('/data/outputs/new\\nline.txt', 'w').write('odd name')\n"
        "try:\n    os.link(os.environ['INPUTS'] + '/' + __import__('json').loads(os.environ['DIDS'])[0] + '/0', "
        "'/data/outputs/hardlink')\nexcept OSError as e:\n    open('/data/outputs/link-refused', 'w').write(str(e))\n"
    ),
}
EXPECTED = {
    "memory bomb": (41, "out of memory"),
    "fork bomb": (41, "Failed to run algorithm"),
    "endless loop": (70, "Job finished"),
    "disk filler": (41, "disk limit"),
    "a million files": (41, "wrote more than 200 files"),
    "hostile outputs": (70, "Job finished"),
}


def test_hostile_algorithms_are_contained(
    stack: Stack,
    pool: Pool,
    jobs: Jobs,  # noqa: F811
    engine: LocalEngine,  # noqa: F811
    file_server: FileServer,
) -> None:
    file_server.files["/hostile.csv"] = b"private,data\n1,2\n"
    url = f"{file_server.url}/hostile.csv"
    hostile = {name: jobs.submit(job_spec(code, [url]), ENV) for name, code in HOSTILE.items()}
    honest = jobs.submit(job_spec("open('/data/outputs/sum.txt', 'w').write(str(1 + 2))", [url]), ENV)
    owner = jobs.store.get(honest).owner  # type: ignore[union-attr]
    api = TestClient(create_app(stack.settings, pool, engine))
    slowest = 0.0
    end = time.monotonic() + 120
    while time.monotonic() < end and not all(jobs.store.get(j).finished for j in [honest, *hostile.values()]):  # type: ignore[union-attr]
        start = time.monotonic()
        answer = api.get("/api/services/compute", params={"consumerAddress": owner, "jobId": honest})
        slowest = max(slowest, time.monotonic() - start)
        assert answer.status_code == 200
        time.sleep(0.2)
    assert slowest < 2.0, f"the API took {slowest:.1f} s to answer during the attack"
    done = jobs.wait(honest)
    assert done.status == 70 and jobs.stored(honest, "outputs/sum.txt").read_text() == "3"
    for name, job_id in hostile.items():
        job = jobs.wait(job_id)
        code, text = EXPECTED[name]
        assert job.status == code and text in job.status_text + json.dumps(job.details), (name, job.status_text)
    assert jobs.wait(hostile["endless loop"]).stopreq == 2
    published = {r["filename"] for r in jobs.wait(hostile["hostile outputs"]).results or [] if r["type"] == "output"}
    assert published == {"new\nline.txt", "link-refused"}  # no FIFO, no symlink, no hard link to the input
    assert "Invalid cross-device link" in jobs.stored(hostile["hostile outputs"], "outputs/link-refused").read_text()
    assert algorithm_processes() == []
