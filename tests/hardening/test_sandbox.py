"""The sandbox attacked as an adversary would: one test per hole found in it, and what an algorithm may and
may not do (system calls, /proc, files, sockets, keyrings), checked from inside and from the host.

Each job here is sent to the real local engine (real bubblewrap, cgroups, job file systems, Postgres) the
way the provider sends it; the algorithm reports what it saw in an output file.
"""

from __future__ import annotations

import ctypes
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from c2d.db.jobs import JobRecord
from tests.workflows.conftest import FileServer, Jobs
from tests.workflows.jobs import job_spec, make_environment
from workflows.local.engine import LocalEngine
from workflows.local.identity import SUBUID, read_range

ENV = make_environment(max_job_duration=20, step_timeout=20)
SMALL_DISK = make_environment(disk_gb=0.25, max_output_files=500, max_job_duration=30, step_timeout=30)
MiB = 1024**2
x86_64 = os.uname().machine == "x86_64"


def _run(jobs: Jobs, file_server: FileServer, code: str, env: object = ENV) -> JobRecord:
    file_server.files["/sandbox.csv"] = b"private,data\n1,2\n"
    return jobs.wait(jobs.submit(job_spec(code, [f"{file_server.url}/sandbox.csv"]), env), timeout=90)  # type: ignore[arg-type]


def _outputs(job: JobRecord) -> dict[str, int]:
    return {str(r["filename"]): int(r["filesize"]) for r in job.results or [] if r["type"] == "output"}


def _stored_bytes(jobs: Jobs, job_id: str) -> int:
    total = 0
    for root, _, files in os.walk(jobs.settings.store_dir / job_id):
        total += sum(os.lstat(os.path.join(root, name)).st_size for name in files)
    return total


def _probe(jobs: Jobs, job: JobRecord) -> dict[str, object]:
    assert job.status == 70, (job.status_text, job.details)
    result: dict[str, object] = json.loads(jobs.stored(job.job_id, "outputs/probe.json").read_text())
    return result


def _job_uid_range() -> range:
    found = read_range(SUBUID, "c2d-jobs")
    assert found is not None, "tools/setup_sandbox_ids.sh registers the sandboxes' id range"
    return range(found.first, found.first + found.count)


# -- 1. host root -----------------------------------------------------------------------------------
def test_proc_sys_is_read_only_and_proc_masked(jobs: Jobs, file_server: FileServer) -> None:
    code = (
        "import os, json, errno\n"
        "r = {}\n"
        "writable = []\n"
        "for root, dirs, files in os.walk('/proc/sys'):\n"
        "    for name in files:\n"
        "        try:\n"
        "            os.close(os.open(os.path.join(root, name), os.O_WRONLY))\n"
        "            writable.append(os.path.join(root, name))\n"
        "        except OSError:\n"
        "            pass\n"
        "r['writable_sysctls'] = writable\n"
        "try:\n"
        "    open('/proc/sys/kernel/core_pattern', 'w').write('|/data/outputs/x')\n"
        "    r['core_pattern'] = 'written'\n"
        "except OSError as e:\n"
        "    r['core_pattern'] = errno.errorcode[e.errno]\n"
        "for p in ('/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/interrupts', '/proc/acpi', '/sys'):\n"
        "    try:\n"
        "        r[p] = (open(p, 'rb').read(64).decode('latin-1') if not os.path.isdir(p) else os.listdir(p))\n"
        "    except OSError as e:\n"
        "        r[p] = errno.errorcode[e.errno]\n"
        "json.dump(r, open('/data/outputs/probe.json', 'w'))\n"
    )
    job = _run(jobs, file_server, code)
    probe = _probe(jobs, job)
    assert probe["writable_sysctls"] == [] and probe["core_pattern"] in ("EROFS", "EACCES")
    for masked in ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/interrupts"):
        assert probe[masked] in ("", "EACCES", "ENOENT"), (masked, probe[masked])
    assert probe["/proc/acpi"] in ([], "ENOENT") and probe["/sys"] == "ENOENT"
    assert job.details["sandboxUid"] in _job_uid_range()  # its uid on the host: see the next test


def test_every_sandboxed_process_runs_as_the_jobs_uid_with_the_filter(
    jobs: Jobs, file_server: FileServer, engine: LocalEngine
) -> None:
    """Seen from the host: input-fetch (a child of the job's warm runner), the runner itself and the algorithm
    run as the job's uid, with no capability, no_new_privs and the seccomp filter; two jobs running at the
    same time have two uids."""
    held = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as slow:  # a dataset server that answers after a while
        port = slow.getsockname()[1]

        def answer() -> None:
            for _ in range(2):
                conn, _ = slow.accept()
                held.set()
                time.sleep(1.5)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                conn.close()

        threading.Thread(target=answer, daemon=True).start()
        engine.settings.fetch.allow_hosts.append(f"127.0.0.1:{port}")
        code = "import time\nprint('running', flush=True)\ntime.sleep(2)\n"
        first = jobs.submit(job_spec(code, [f"http://127.0.0.1:{port}/slow.csv"]), ENV)
        second = jobs.submit(job_spec(code, [f"http://127.0.0.1:{port}/slow.csv"]), ENV)
        assert held.wait(20)
        fetching = _processes_of_uids(_job_uid_range())
        outside = _job_processes_outside(_job_uid_range())
        jobs.wait_log(first, "running", timeout=30)
        jobs.wait_log(second, "running", timeout=30)
        running = _processes_of_uids(_job_uid_range())
        outside += _job_processes_outside(_job_uid_range())
    assert outside == [], "a process of a job runs with a uid of the host's own"
    done = [jobs.wait(first), jobs.wait(second)]
    assert [job.status for job in done] == [70, 70]
    uids = {job.details["sandboxUid"] for job in done}
    assert len(uids) == 2, "two jobs running at the same time shared a uid"
    # bubblewrap's own processes run outside the filter; every process of the job runs inside it: the warm
    # runner, its input-fetch children, the algorithm's shell, tee and interpreter. (Processes that are exiting
    # show no command line; other uids of the range are idle runners of earlier jobs: the same rules hold.)
    seen = [p for p in fetching + running if p["cmd"]]
    ours = [p for p in seen if p["uid"] in uids]
    assert any("stepserver" in str(p["cmd"]) for p in ours if p in fetching), "no warm child was seen fetching"
    assert {p["uid"] for p in ours if "transformations/algorithm" in str(p["cmd"])} == uids
    for process in seen:
        assert process["CapEff"] == "0000000000000000" and process["NoNewPrivs"] == "1", process
        if not str(process["cmd"]).startswith("bwrap "):
            assert process["Seccomp"] == "2", process


def _job_processes_outside(uids: range) -> list[str]:
    """Command lines of the processes of jobs (bubblewrap, the warm runners, algorithms) whose uid is not one of
    the sandboxes' (the engine's own bwrap processes for jobs would be root's)."""
    markers = (b"bwrap", b"workflows.local.stepserver", b"/data/transformations/algorithm")
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            uid = os.stat(f"/proc/{pid}").st_uid
        except OSError:
            continue
        if any(marker in cmd for marker in markers) and uid not in uids:
            found.append(cmd.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _processes_of_uids(uids: range) -> list[dict[str, object]]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            status = dict(
                line.split(":\t", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":\t" in line
            )
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        uid = int(status["Uid"].split()[0])
        if uid in uids:
            fields = {key: status[key].strip() for key in ("CapEff", "NoNewPrivs", "Seccomp")}
            found.append({"pid": int(pid), "uid": uid, "cmd": cmd, **fields})
    return found


# -- 2. keyrings ----------------------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
SESSION_KEYRING = -3


def _add_key(description: bytes, payload: bytes) -> int:
    return int(_libc.syscall(248, b"user", description, payload, len(payload), SESSION_KEYRING))


@pytest.fixture
def node_key() -> Iterator[bytes]:
    """A key in the session keyring of the node (this test process): what a sandbox must never reach."""
    if not x86_64:
        pytest.skip("the key system calls are called by their x86_64 numbers")
    description = b"c2d-node-secret-" + os.urandom(4).hex().encode()
    serial = _add_key(description, b"the node's own secret")
    if serial < 0:
        pytest.skip(f"this kernel refuses keys to the test process: {os.strerror(ctypes.get_errno())}")
    yield description
    _libc.syscall(250, 3, serial)  # KEYCTL_REVOKE


def test_jobs_share_no_keyring_with_each_other_or_the_node(
    jobs: Jobs, file_server: FileServer, node_key: bytes
) -> None:
    probe = (
        "import ctypes, errno, json, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "r = {}\n"
        "def search(desc):\n"
        "    found = libc.syscall(250, 10, -3, b'user', desc, 0)\n"  # KEYCTL_SEARCH in @s
        "    return 'found' if found >= 0 else errno.errorcode.get(ctypes.get_errno(), 'none')\n"
        "r['node'] = search(NODE)\n"
        "r['earlier'] = search(b'c2d-job-a')\n"
        "added = libc.syscall(248, b'user', b'c2d-job-a', b'dataset-a', 9, -3)\n"
        "r['add'] = 'added' if added >= 0 else errno.errorcode.get(ctypes.get_errno(), 'none')\n"
        "try:\n"
        "    r['proc_keys'] = [line for line in open('/proc/keys').read().splitlines() if 'c2d-' in line]\n"
        "except OSError:\n"
        "    r['proc_keys'] = []\n"
        "json.dump(r, open('/data/outputs/probe.json', 'w'))\n"
    ).replace("NODE", repr(node_key))
    first = _probe(jobs, _run(jobs, file_server, probe))
    second = _probe(jobs, _run(jobs, file_server, probe))
    for seen in (first, second):
        assert seen["node"] != "found" and seen["earlier"] != "found", seen
        assert seen["add"] == "EPERM" and seen["proc_keys"] == [], seen


# -- 3. caps whatever the tree's shape ----------------------------------------------------------------
DEEP_PATH = (
    "import os, time\n"
    "os.chdir('/data/outputs')\n"
    "for i in range(20):\n"
    "    name = ('d%02d' % i) * 83\n"
    "    os.mkdir(name)\n"
    "    os.chdir(name)\n"
)


def test_the_disk_cap_holds_below_path_max(jobs: Jobs, file_server: FileServer) -> None:
    code = DEEP_PATH + (
        "for i in range(4):\n"
        "    with open(f'big{i}', 'wb') as f:\n"
        "        for _ in range(240):\n"
        "            f.write(b'1' * 1024**2)\n"
    )
    job = _run(jobs, file_server, code, SMALL_DISK)
    assert (job.status, job.status_text) == (41, "Failed to run algorithm: wrote more than the 256 MiB disk limit")
    assert _stored_bytes(jobs, job.job_id) <= 256 * MiB


def test_the_file_cap_holds_below_path_max(jobs: Jobs, file_server: FileServer) -> None:
    code = DEEP_PATH + "for i in range(2000):\n    open(f'f{i}', 'w').close()\ntime.sleep(5)\n"
    job = _run(jobs, file_server, code, SMALL_DISK)
    assert (job.status, job.status_text) == (41, "Failed to run algorithm: wrote more than 500 files")
    assert len(_outputs(job)) <= 500


# -- 4. sparse files ----------------------------------------------------------------------------------------
def test_sparse_files_count_at_their_size(jobs: Jobs, file_server: FileServer) -> None:
    sparse = "for i in range(8):\n    open(f'/data/outputs/sparse{i}', 'wb').truncate(255 * 1024**2)\n"
    quick = _run(jobs, file_server, sparse, SMALL_DISK)  # ends before the first scan: publishing caps it
    assert quick.status == 70, quick.status_text
    assert _stored_bytes(jobs, quick.job_id) <= 256 * MiB
    assert len(_outputs(quick)) == 1
    assert jobs.stored(quick.job_id, "logs/publish.log").read_text().count("sparse") >= 8
    slow = _run(jobs, file_server, sparse + "import time\ntime.sleep(5)\n", SMALL_DISK)  # the scan sees it
    assert (slow.status, slow.status_text) == (41, "Failed to run algorithm: wrote more than the 256 MiB disk limit")
    assert _stored_bytes(jobs, slow.job_id) <= 256 * MiB


# -- 5. AF_VSOCK ----------------------------------------------------------------------------------------------
def test_no_vsock_or_other_socket_family(jobs: Jobs, file_server: FileServer) -> None:
    code = (
        "import errno, json, socket\n"
        "r = {}\n"
        "for name, family, kind, proto in (('vsock', 40, 1, 0), ('packet', 17, 3, 0), ('netlink_audit', 16, 3, 9),\n"
        "                                  ('bluetooth', 31, 1, 0), ('alg', 38, 5, 0), ('can', 29, 3, 1)):\n"
        "    try:\n"
        "        s = socket.socket(family, kind, proto)\n"
        "        if name == 'vsock':\n"
        "            s.bind((0xFFFFFFFF, 8030))\n"
        "        r[name] = 'opened'\n"
        "    except OSError as e:\n"
        "        r[name] = errno.errorcode[e.errno]\n"
        "json.dump(r, open('/data/outputs/probe.json', 'w'))\n"
    )
    probe = _probe(jobs, _run(jobs, file_server, code))
    assert probe == dict.fromkeys(("vsock", "packet", "netlink_audit", "bluetooth", "alg", "can"), "EPERM")


# -- 6. deep trees --------------------------------------------------------------------------------------------
DEEP_TREE = (  # as deep as the job's inodes allow (its file system has a fixed number: 10,000 where it has none)
    "import os, time\n"
    "os.chdir('/data/outputs')\n"
    "open('top.txt', 'w').write('top')\n"
    "try:\n"
    "    for i in range(10000):\n"
    "        os.mkdir('d')\n"
    "        os.chdir('d')\n"
    "    open('bottom.txt', 'w').write('bottom')\n"
    "except OSError as e:\n"
    "    print('stopped at', i, e)\n"
    "print('deep tree made', flush=True)\n"
)


def test_a_deep_tree_is_published_around_and_removed(jobs: Jobs, file_server: FileServer) -> None:
    quick = _run(jobs, file_server, DEEP_TREE)
    assert quick.status == 70, quick.status_text
    assert set(_outputs(quick)) == {"top.txt"}
    kinds = {r["type"] for r in quick.results or []}
    assert {"algorithmLog", "publishLog"} <= kinds
    assert "deep tree made" in jobs.stored(quick.job_id, "logs/algorithm.log").read_text()
    jobs.wait_removed(quick.job_id)
    slow = _run(jobs, file_server, DEEP_TREE + "time.sleep(5)\n")
    assert (slow.status, slow.status_text) == (41, "Failed to run algorithm: made folders nested deeper than 64 levels")
    assert "algorithm.log" in {r["filename"] for r in slow.results or []}
    jobs.wait_removed(slow.job_id)


# -- 7. special files in the logs -----------------------------------------------------------------------------
def test_a_fifo_among_the_logs_does_not_hang_publishing(jobs: Jobs, file_server: FileServer) -> None:
    code = (
        "import os\n"
        "os.mkfifo('/data/logs/filter.log')\n"
        "os.unlink('/data/logs/algorithm.log')\n"
        "os.mkfifo('/data/logs/algorithm.log')\n"
        "os.mkfifo('/data/outputs/pipe')\n"
        "open('/data/outputs/real.txt', 'w').write('real')\n"
    )
    start = time.monotonic()
    job = _run(jobs, file_server, code)
    assert time.monotonic() - start < 12, "publishing waited on a FIFO"
    assert job.status == 70, job.status_text
    assert _outputs(job) == {"real.txt": 4}
    publish_log = jobs.stored(job.job_id, "logs/publish.log").read_text()
    assert "algorithm.log" in publish_log and "filter.log" in publish_log and "pipe" in publish_log


# -- 8. status text ------------------------------------------------------------------------------------------
def test_what_an_algorithm_prints_never_passes_for_the_sandboxs_words(jobs: Jobs, file_server: FileServer) -> None:
    forged = (
        "import sys\n"
        'sys.stderr.write("bwrap: \\x1b[31mCan\'t mount proc\\x1b[0m: sandbox escaped\\n")\n'
        "sys.stderr.write('c2d-step: could not join the cgroups\\n')\n"
        "sys.exit(EXIT)\n"
    )
    for code in (1, 125):
        job = _run(jobs, file_server, forged.replace("EXIT", str(code)))
        assert (job.status, job.status_text) == (41, f"Failed to run algorithm: exit code {code}")
        assert job.details["steps"]["algorithm"]["phase"] == "Failed"
        events = [event.status_text for event in jobs.store.events(job.job_id)]
        assert not any("bwrap" in (text or "") or "\x1b" in (text or "") for text in events)


# -- 9. odd names -------------------------------------------------------------------------------------------
def test_odd_names_lose_nothing_else(jobs: Jobs, file_server: FileServer) -> None:
    long_name = "n" * 255
    code = (
        "import os, sys\n"
        "fd = os.open(b'/data/outputs/bad\\xff.txt', os.O_CREAT | os.O_WRONLY, 0o644)\n"
        "os.write(fd, b'bad')\n"
        f"open('/data/outputs/{long_name}', 'w').write('long')\n"
        "open('/data/outputs/x', 'w').write('x')\n"
        "open('/data/outputs/.x.part', 'w').write('dot part')\n"
        "open('/data/outputs/plain.txt', 'w').write('plain')\n"
        "sys.stderr.write('bwrap: a NUL \\x00 here\\n')\n"
    )
    job = _run(jobs, file_server, code)
    assert job.status == 70, job.status_text
    assert _outputs(job) == {long_name: 4, "x": 1, ".x.part": 8, "plain.txt": 5}
    assert jobs.stored(job.job_id, "outputs/.x.part").read_text() == "dot part"
    assert jobs.stored(job.job_id, f"outputs/{long_name}").read_text() == "long"
    stored = {path.name for path in (jobs.settings.store_dir / job.job_id / "outputs").iterdir()}
    assert stored == set(_outputs(job)), "a file in the store is not in the result list"
    assert "bad\\xff.txt" in jobs.stored(job.job_id, "logs/publish.log").read_text()
    everything = job.status_text + json.dumps(job.details) + json.dumps(job.results)
    assert str(jobs.settings.data_dir) not in everything


def test_no_host_path_in_a_failed_publish(jobs: Jobs, file_server: FileServer, engine: LocalEngine) -> None:
    """A store that refuses the job's folder: the status says so without naming the host's folders."""
    store = jobs.settings.store_dir
    spec = job_spec("open('/data/outputs/a.txt', 'w').write('a')", [f"{file_server.url}/sandbox.csv"])
    file_server.files["/sandbox.csv"] = b"x"
    (store / spec.job_id).write_text("a file where the job's results folder goes")
    job = jobs.wait(jobs.submit(spec, ENV), timeout=60)
    assert job.status == 62
    assert str(jobs.settings.data_dir) not in job.status_text + json.dumps(job.details)
    (store / spec.job_id).unlink()


# -- 10. smaller leaks ----------------------------------------------------------------------------------------
def test_a_full_tmp_does_not_change_the_exit_code(jobs: Jobs, file_server: FileServer) -> None:
    code = (
        "try:\n"
        "    with open('/tmp/fill', 'wb') as f:\n"
        "        while True:\n"
        "            f.write(b'1' * 1024**2)\n"
        "except OSError:\n"
        "    pass\n"
        "open('/data/outputs/done.txt', 'w').write('done')\n"
        "print('filled /tmp')\n"
    )
    job = _run(jobs, file_server, code, SMALL_DISK)
    assert (job.status, job.status_text) == (70, "Job finished")
    assert {r["type"] for r in job.results or []} >= {"algorithmLog", "publishLog"}


def test_mountinfo_names_no_host_folder_and_no_job(jobs: Jobs, file_server: FileServer) -> None:
    code = "import shutil\nshutil.copy('/proc/self/mountinfo', '/data/outputs/mountinfo')\n"
    job = _run(jobs, file_server, code)
    assert job.status == 70, job.status_text
    mountinfo = jobs.stored(job.job_id, "outputs/mountinfo").read_text()
    assert "/data/outputs" in mountinfo
    assert str(jobs.settings.data_dir) not in mountinfo and job.job_id not in mountinfo


# -- what an algorithm may and may not do ---------------------------------------------------------------------
MATRIX = r"""
import ctypes, errno, json, os, signal, socket, subprocess, threading
libc = ctypes.CDLL(None, use_errno=True)
r = {}
def attempt(name, action):
    try:
        result = action()
        if isinstance(result, int) and result < 0:
            r[name] = errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
        else:
            r[name] = 'ok'
    except OSError as e:
        r[name] = errno.errorcode.get(e.errno, str(e.errno))
did = json.loads(os.environ['DIDS'])[0]
attempt('read an input', lambda: open(f'/data/inputs/{did}/0').read())
attempt('write an output', lambda: open('/data/outputs/o.txt', 'w').write('o'))
attempt('write a log', lambda: open('/data/logs/mine.log', 'w').write('l'))
attempt('write /tmp', lambda: open('/tmp/t', 'w').write('t'))
attempt('write an input', lambda: open(f'/data/inputs/{did}/0', 'a'))
attempt('write the algorithm', lambda: open('/data/transformations/algorithm', 'a'))
attempt('write /', lambda: open('/x', 'w'))
attempt('write /usr', lambda: open('/usr/x', 'w'))
attempt('read the adminlogs', lambda: open('/data/adminlogs/configure.log'))
attempt('setuid 0', lambda: os.setuid(0))
attempt('write a sysctl', lambda: open('/proc/sys/kernel/hostname', 'w').write('x'))
pid = os.fork()
if pid == 0:
    os._exit(0)
r['fork'] = 'ok' if os.waitpid(pid, 0)[1] == 0 else 'failed'
attempt('thread', lambda: (lambda t: (t.start(), t.join()))(threading.Thread(target=lambda: None)))
attempt('exec', lambda: subprocess.run(['/bin/true'], check=True))
attempt('unix socketpair', lambda: socket.socketpair())
attempt('tcp connect', lambda: socket.create_connection(('1.1.1.1', 53), 2))
attempt('udp send', lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('1.1.1.1', 53)))
attempt('netlink route', lambda: socket.socket(16, 3, 0))
attempt('vsock', lambda: socket.socket(40, 1, 0))
attempt('packet', lambda: socket.socket(17, 3, 0))
attempt('keyctl', lambda: libc.syscall(250, 0, -3, 0))
attempt('add_key', lambda: libc.syscall(248, b'user', b'k', b'v', 1, -3))
attempt('request_key', lambda: libc.syscall(249, b'user', b'k', None, -3))
attempt('io_uring_setup', lambda: libc.syscall(425, 8, ctypes.create_string_buffer(120)))
attempt('perf_event_open', lambda: libc.syscall(298, ctypes.create_string_buffer(128), 0, -1, -1, 0))
attempt('userfaultfd', lambda: libc.syscall(323, 0))
attempt('bpf', lambda: libc.syscall(321, 0, ctypes.create_string_buffer(64), 64))
attempt('mount', lambda: libc.mount(b'none', b'/tmp', b'tmpfs', 0, None))
attempt('unshare user', lambda: libc.unshare(0x10000000))
attempt('ptrace pid 1', lambda: libc.ptrace(16, 1, 0, 0))
attempt('process_vm_readv', lambda: libc.syscall(310, 1, 0, 0, 0, 0, 0))
attempt('open_by_handle_at', lambda: libc.syscall(304, -100, ctypes.create_string_buffer(16), 0))
attempt('chroot', lambda: libc.chroot(b'/tmp'))
attempt('mknod', lambda: os.mknod('/tmp/dev', 0o600 | 0o020000, os.makedev(1, 3)))
attempt('kexec_load', lambda: libc.syscall(246, 0, 0, 0, 0))
r['fds'] = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))
r['processes'] = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())[:1]
r['hostname'] = socket.gethostname()
json.dump(r, open('/data/outputs/probe.json', 'w'))
"""
ALLOWED = (
    "read an input", "write an output", "write a log", "write /tmp", "fork", "thread", "exec", "unix socketpair",
    "netlink route",
)  # fmt: skip
REFUSED = {
    "write an input": "EROFS", "write the algorithm": "EROFS", "write /": "EROFS", "write /usr": "EROFS",
    "read the adminlogs": "ENOENT", "setuid 0": "EINVAL",  # uid 0 does not exist in its namespace
    "write a sysctl": "EROFS",
    "tcp connect": "ENETUNREACH", "udp send": "ENETUNREACH", "vsock": "EPERM", "packet": "EPERM",
    "keyctl": "EPERM", "add_key": "EPERM", "request_key": "EPERM", "io_uring_setup": "EPERM",
    "perf_event_open": "EPERM", "userfaultfd": "EPERM", "bpf": "EPERM", "mount": "EPERM", "unshare user": "EPERM",
    "ptrace pid 1": "EPERM", "process_vm_readv": "EPERM", "open_by_handle_at": "EPERM", "chroot": "EPERM",
    "mknod": "EPERM", "kexec_load": "EPERM"
}  # fmt: skip


@pytest.mark.skipif(not x86_64, reason="the probe calls system calls by their x86_64 numbers")
def test_what_an_algorithm_may_and_may_not_do(jobs: Jobs, file_server: FileServer) -> None:
    probe = _probe(jobs, _run(jobs, file_server, MATRIX))
    fds, first_pid, hostname = probe.pop("fds"), probe.pop("processes"), probe.pop("hostname")
    assert probe == dict.fromkeys(ALLOWED, "ok") | REFUSED
    assert fds == [0, 1, 2, 3], "a descriptor of the node leaked into the sandbox"  # 3: the listing's own
    assert first_pid == [1] and hostname == "c2d-job"
