"""The local engine against real Postgres and real bubblewrap sandboxes.

Every test submits a job row with its rendered Workflow (what the provider does) and reads the
outcome back from Postgres, the results store and the job's events.
"""

from __future__ import annotations

import hashlib
import json
import os
import time

from c2d.db.job_records import ResultEntry
from c2d.status import JobStatus
from tests.helpers import algorithm_processes
from workflows.local.engine import LocalEngine
from workflows.spec import InputFile

from .conftest import FileServer, Jobs
from .jobs import did, job_spec, make_environment

ENV = make_environment()


def _results(jobs: Jobs, job_id: str) -> dict[str, ResultEntry]:
    job = jobs.store.get(job_id)
    assert job is not None and job.results is not None
    return {str(r["filename"]): r for r in job.results}


def test_success_path(jobs: Jobs, file_server: FileServer) -> None:
    data = b"a,b\n1,2\n3,4\n"
    file_server.files["/ok.csv"] = data
    code = (
        "import os, json\n"
        "dids = json.loads(os.environ['DIDS'])\n"
        "rows = open(f'/data/inputs/{dids[0]}/0').read().splitlines()\n"
        "ddo = json.load(open(f'/data/ddos/{dids[0]}.json'))\n"
        "open('/data/outputs/result.json', 'w').write(json.dumps({'rows': len(rows), 'ddo': ddo['id']}))\n"
        "os.makedirs('/data/outputs/sub'); open('/data/outputs/sub/more.txt', 'w').write('more')\n"
        "print('algorithm done')\n"
    )
    spec = job_spec(code, [f"{file_server.url}/ok.csv"], checksum=hashlib.sha256(data).hexdigest())
    job_id = jobs.submit(spec, ENV)
    job = jobs.wait(job_id)

    assert (job.status, job.status_text, job.stopreq) == (70, "Job finished", 0)
    assert jobs.statuses(job_id) == [1, 10, 20, 30, 40, 60, 70]
    assert job.date_finished is not None
    results = job.results or []
    assert [(r["filename"], r["type"]) for r in results] == [
        ("result.json", "output"),
        ("sub/more.txt", "output"),
        ("algorithm.log", "algorithmLog"),
        ("configure.log", "configurationLog"),
        ("publish.log", "publishLog"),
    ]
    assert json.loads(jobs.stored(job_id, "outputs/result.json").read_text()) == {"rows": 3, "ddo": did("data")}
    assert results[0]["filesize"] == jobs.stored(job_id, "outputs/result.json").stat().st_size
    assert "algorithm done" in jobs.stored(job_id, "logs/algorithm.log").read_text()
    configure = jobs.stored(job_id, "logs/configure.log").read_text()
    assert "size and sha256 verified" in configure and file_server.url not in configure  # URLs are secret
    jobs.wait_removed(job_id)  # the job folder is deleted once the job is final
    assert job.details["steps"]["algorithm"]["phase"] == "Succeeded"


def test_algorithm_crash_fails_with_its_log_kept(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/crash.csv"] = b"x"
    spec = job_spec("print('about to fail')\nraise SystemExit(3)", [f"{file_server.url}/crash.csv"])
    job = jobs.wait(jobs.submit(spec, ENV))
    assert job.status == JobStatus.ALGORITHM_FAILED
    assert job.status_text == "Failed to run algorithm: exit code 3"
    assert "about to fail" in jobs.stored(job.job_id, "logs/algorithm.log").read_text()
    assert set(_results(jobs, job.job_id)) == {"algorithm.log", "configure.log", "publish.log"}
    # 41 when the algorithm failed (logs still publishing), 41 again when the job finished
    assert jobs.statuses(job.job_id) == [1, 10, 20, 30, 40, 41, 41]


def test_missing_dataset_url_is_data_provisioning_failed(jobs: Jobs, file_server: FileServer) -> None:
    spec = job_spec("open('/data/outputs/ran', 'w')", [f"{file_server.url}/does-not-exist"])
    job = jobs.wait(jobs.submit(spec, ENV))
    assert (job.status, job.status_text) == (
        31,
        "Data provisioning failed: 1 of 1 dataset file(s) could not be fetched (see configure.log)",
    )
    assert job.details["steps"]["algorithm"]["phase"] == "Omitted"
    assert "HTTP 404" in jobs.stored(job.job_id, "logs/configure.log").read_text()
    assert "ran" not in _results(jobs, job.job_id)


def test_checksum_mismatch_and_missing_algorithm(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/sum.csv"] = b"tampered"
    bad = job_spec("pass", [f"{file_server.url}/sum.csv"], checksum="00" * 32)
    job = jobs.wait(jobs.submit(bad, ENV))
    assert job.status == 31
    assert "does not match the declared checksum" in jobs.stored(job.job_id, "logs/configure.log").read_text()

    no_algo = job_spec("", [f"{file_server.url}/sum.csv"], algorithm_files=[InputFile(url=f"{file_server.url}/x.py")])
    job = jobs.wait(jobs.submit(no_algo, ENV))
    assert (job.status, job.status_text) == (
        32,
        "Algorithm provisioning failed: the algorithm could not be fetched: algorithm file 0: server answered HTTP 404",
    )


def test_transient_fetch_errors_are_retried(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/flaky.csv"] = b"ok"
    file_server.failures["/flaky.csv"] = 4  # three in-step attempts fail, the engine's retry succeeds
    spec = job_spec(
        "print(open('/data/inputs/' + __import__('os').listdir('/data/inputs')[0] + '/0').read())",
        [f"{file_server.url}/flaky.csv"],
    )
    job = jobs.wait(jobs.submit(spec, ENV))
    assert job.status == 70, job.status_text
    assert file_server.hits["/flaky.csv"] == 5
    assert job.details["steps"]["input-fetch"]["attempt"] == 1


def test_memory_bomb_is_killed_and_reported(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/m.csv"] = b"x"
    spec = job_spec(
        "blocks = []\nwhile True:\n    blocks.append(bytearray(32 * 1024**2))", [f"{file_server.url}/m.csv"]
    )
    job = jobs.wait(jobs.submit(spec, ENV))
    assert job.status == JobStatus.ALGORITHM_FAILED
    assert job.status_text == "Failed to run algorithm: out of memory (limit 256 MiB)"


def test_fork_bomb_is_contained_by_the_pids_limit(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/f.csv"] = b"x"
    code = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(2000):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print('forked', n)\n"
        "open('/data/outputs/forked', 'w').write(str(n))\n"
        "os._exit(0)\n"
    )
    spec = job_spec(code, [f"{file_server.url}/f.csv"])
    job = jobs.wait(jobs.submit(spec, ENV))
    assert job.status == 70, job.status_text
    forked = int(jobs.stored(job.job_id, "outputs/forked").read_text())
    assert 0 < forked < ENV.pids  # fork failed at the limit instead of exhausting the host
    assert algorithm_processes() == []  # the sleeping children were killed with their step


def test_endless_loop_hits_the_deadline(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/loop.csv"] = b"x"
    env = make_environment(max_job_duration=3)
    spec = job_spec("print('spinning', flush=True)\nwhile True:\n    pass", [f"{file_server.url}/loop.csv"])
    start = time.monotonic()
    job = jobs.wait(jobs.submit(spec, env))
    assert (job.status, job.stopreq) == (70, 2)  # Ocean: a timed-out algorithm ends 70 with stopreq 2
    assert job.details["steps"]["algorithm"]["message"] == "deadline of 3 s exceeded"
    assert time.monotonic() - start < 15
    assert "spinning" in jobs.stored(job.job_id, "logs/algorithm.log").read_text()


def test_no_network_no_escape_no_secrets(jobs: Jobs, file_server: FileServer, engine: LocalEngine) -> None:
    file_server.files["/net.csv"] = b"x"
    settings = jobs.settings
    probes = {
        "connect_file_server": f"socket.create_connection(('127.0.0.1', {file_server.url.rsplit(':', 1)[1]}), 2)",
        "connect_outside": "socket.create_connection(('1.1.1.1', 53), 2)",
        "dns": "socket.getaddrinfo('example.com', 80)",
        "write_inputs": "open('/data/inputs/evil', 'w')",
        "write_transformations": "open('/data/transformations/algorithm', 'a')",
        "write_root": "open('/evil', 'w')",
        "write_etc": "open('/etc/evil', 'w')",
        "write_usr": "open('/usr/evil', 'w')",
        "write_site_packages": "open(site.getsitepackages()[0] + '/evil.pth', 'w')",
        "read_pg_password": f"open({str(settings.data_dir / 'postgres.password')!r}).read()",
        "read_other_jobs": f"os.listdir({str(settings.jobs_dir)!r})",
        "read_store": f"os.listdir({str(settings.store_dir)!r})",
        "read_configure_log": "open('/data/adminlogs/configure.log').read()",
        "proc_1_root": f"os.listdir('/proc/1/root' + {str(settings.data_dir)!r})",
        "setuid_root": "os.setuid(0)",
        "mount_proc": "os.system('mount -t tmpfs x /tmp 2>/dev/null') == 0 or (_ for _ in ()).throw(OSError())",
    }
    code = "import os, site, socket, json\nresults = {}\n"
    for name, probe in probes.items():
        code += f"try:\n    {probe}\n    results[{name!r}] = 'ALLOWED'\n"
        code += f"except Exception:\n    results[{name!r}] = 'blocked'\n"
    code += (
        "results['env'] = sorted(os.environ)\n"
        "results['uid'] = os.getuid()\n"
        "results['site'] = [os.listdir(p) for p in site.getsitepackages() if os.path.isdir(p)]\n"
        "open('/tmp/scratch', 'w').write('tmp is writable')\n"
        "open('/data/outputs/probes.json', 'w').write(json.dumps(results))\n"
    )
    spec = job_spec(code, [f"{file_server.url}/net.csv"])
    job = jobs.wait(jobs.submit(spec, ENV))
    assert job.status == 70, job.status_text
    results = json.loads(jobs.stored(job.job_id, "outputs/probes.json").read_text())
    allowed = [name for name in probes if results[name] != "blocked"]
    assert allowed == []
    assert results["uid"] == 65534
    # the python:* runtime is the interpreter and its standard library: none of the host's packages
    assert results["site"] and all(listing == [] for listing in results["site"])
    assert not any(name.startswith("C2D_") or "KEY" in name for name in results["env"])


def test_symlinks_in_outputs_are_not_published(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/s.csv"] = b"x"
    code = (
        "import os\n"
        "os.symlink('/etc/passwd', '/data/outputs/passwd')\n"
        "os.symlink('/data/inputs', '/data/outputs/inputs')\n"
        "os.symlink('/', '/data/outputs/root')\n"
        "open('/data/outputs/real.txt', 'w').write('real')\n"
    )
    job = jobs.wait(jobs.submit(job_spec(code, [f"{file_server.url}/s.csv"]), ENV))
    assert job.status == 70
    assert [name for name, r in _results(jobs, job.job_id).items() if r["type"] == "output"] == ["real.txt"]
    publish_log = jobs.stored(job.job_id, "logs/publish.log").read_text()
    assert "skipped symlink outputs/passwd" in publish_log and "skipped symlink outputs/root" in publish_log
    stored = jobs.settings.store_dir / job.job_id / "outputs"
    assert sorted(os.listdir(stored)) == ["real.txt"]


def test_disk_and_file_caps(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/d.csv"] = b"x"
    big = "open('/data/outputs/big', 'wb').write(b'0' * (200 * 1024**2))"
    job = jobs.wait(jobs.submit(job_spec(big, [f"{file_server.url}/d.csv"]), ENV))
    assert job.status == JobStatus.ALGORITHM_FAILED
    assert job.status_text.startswith("Failed to run algorithm:")
    many = "import time\nfor i in range(100000):\n    open(f'/data/outputs/f{i}', 'w').close()\ntime.sleep(5)\n"
    job = jobs.wait(jobs.submit(job_spec(many, [f"{file_server.url}/d.csv"]), ENV))
    assert (job.status, job.status_text) == (41, "Failed to run algorithm: wrote more than 100 files")
    outputs = [r for r in job.results or [] if r["type"] == "output"]
    assert len(outputs) <= 100


def test_concurrent_jobs_do_not_see_each_other(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/a.csv"] = b"secret-a"
    file_server.files["/b.csv"] = b"secret-b"
    code = (
        "import os, time\n"
        "time.sleep(1)\n"
        "seen = []\n"
        "for root, dirs, files in os.walk('/data/inputs'):\n"
        "    seen += [open(os.path.join(root, f)).read() for f in files]\n"
        "open('/data/outputs/seen.txt', 'w').write(','.join(sorted(seen)))\n"
    )
    a = jobs.submit(job_spec(code, [f"{file_server.url}/a.csv"], dataset_did=did("a")), ENV)
    b = jobs.submit(job_spec(code, [f"{file_server.url}/b.csv"], dataset_did=did("b")), ENV)
    job_a, job_b = jobs.wait(a), jobs.wait(b)
    assert job_a.status == job_b.status == 70
    assert jobs.stored(a, "outputs/seen.txt").read_text() == "secret-a"
    assert jobs.stored(b, "outputs/seen.txt").read_text() == "secret-b"
    started_a = job_a.details["steps"]["algorithm"]
    started_b = job_b.details["steps"]["algorithm"]
    assert started_a["startedAt"] < started_b["finishedAt"] and started_b["startedAt"] < started_a["finishedAt"]


def test_stop_kills_the_algorithm_promptly(jobs: Jobs, file_server: FileServer, engine: LocalEngine) -> None:
    file_server.files["/stop.csv"] = b"x"
    spec = job_spec("import time\nprint('waiting', flush=True)\ntime.sleep(120)", [f"{file_server.url}/stop.csv"])
    job_id = jobs.submit(spec, ENV)
    jobs.wait_log(job_id, "waiting")
    assert jobs.store.request_stop(job_id, 1)
    asked = time.monotonic()
    engine.stop(job_id)
    job = jobs.wait(job_id)
    assert (job.status, job.stopreq) == (70, 1)
    assert job.details["steps"]["algorithm"]["message"] == "stopped on request"
    stopped_at = job.details["steps"]["algorithm"]["finishedAt"]
    assert time.monotonic() - asked < 5  # includes publishing the logs
    assert stopped_at
    assert "waiting" in jobs.stored(job_id, "logs/algorithm.log").read_text()


def test_stop_request_through_the_database_only(jobs: Jobs, file_server: FileServer) -> None:
    """A provider in another process only sets stopreq; the engine notices within its poll."""
    file_server.files["/stop2.csv"] = b"x"
    code = "import time\nprint('sleeping', flush=True)\ntime.sleep(120)"
    job_id = jobs.submit(job_spec(code, [f"{file_server.url}/stop2.csv"]), ENV)
    jobs.wait_log(job_id, "sleeping")
    asked = time.monotonic()
    assert jobs.store.request_stop(job_id, 1)
    while jobs.store.get(job_id).details["steps"]["algorithm"].get("phase") == "Running":  # type: ignore[union-attr]
        time.sleep(0.02)
    assert time.monotonic() - asked < 2
    assert jobs.wait(job_id).status == 70


def test_live_algorithm_log(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/live.csv"] = b"x"
    code = "import time\nprint('first line', flush=True)\ntime.sleep(2)\nprint('second line', flush=True)"
    job_id = jobs.submit(job_spec(code, [f"{file_server.url}/live.csv"]), ENV)
    jobs.wait_log(job_id, "first line")
    assert jobs.store.get(job_id).status == 40  # type: ignore[union-attr]
    assert "second line" not in jobs.live_log(job_id).read_text()
    assert jobs.wait(job_id).status == 70


def test_result_filter_step(jobs: Jobs, file_server: FileServer) -> None:
    file_server.files["/filter.csv"] = b"x"
    env = make_environment(pipeline=("input-fetch", "algorithm", "result-filter", "output-publish"))
    code = "open('/data/outputs/model.pkl', 'w').write('m')\nopen('/data/outputs/server.key', 'w').write('k')"
    job = jobs.wait(jobs.submit(job_spec(code, [f"{file_server.url}/filter.csv"]), env))
    assert job.status == 70
    assert jobs.statuses(job.job_id) == [1, 10, 20, 30, 40, 50, 60, 70]
    results = _results(jobs, job.job_id)
    assert "model.pkl" in results and "server.key" not in results
    assert results["filter.log"]["type"] == "filteringLog"
    assert "removed outputs/server.key: name denied" in jobs.stored(job.job_id, "logs/filter.log").read_text()
