"""The small parts of the sandbox: the job ids, the staging of bind sources, status texts, the environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workflows.exceptions import SandboxError
from workflows.local.identity import IdentityPool, IdRange, read_range
from workflows.local.interpret import Step
from workflows.local.runner import clean_text
from workflows.local.sandbox import Runtime, step_environment
from workflows.local.staging import Staging, passable


def test_the_range_is_read_by_name_and_handed_out_one_job_at_a_time(tmp_path: Path) -> None:
    table = tmp_path / "subuid"
    table.write_text("alice:100000:65536\n1001:200000:10\nc2d-jobs:300000:4\nc2d-jobs:900000:9\n")
    assert read_range(table, "c2d-jobs") == IdRange(300000, 4)  # the first line for the name
    assert read_range(table, "bob") is None and read_range(tmp_path / "missing", "c2d-jobs") is None
    pool = IdentityPool(IdRange(300000, 4), IdRange(400000, 4), needed=3)
    first, second = pool.acquire(), pool.acquire()
    assert (first.uid, first.gid, second.uid, second.gid) == (300000, 400000, 300001, 400001)
    assert pool.acquire(preferred=300003).uid == 300003  # a resumed job gets its uid back
    assert pool.acquire(preferred=300000).uid == 300002  # ... unless another job holds it
    with pytest.raises(SandboxError, match="every sandbox id is in use"):
        pool.acquire()
    pool.release(second)
    assert pool.acquire().uid == 300001


def test_a_range_that_is_too_small_or_holds_root_is_refused() -> None:
    with pytest.raises(SandboxError, match="has 2 ids; 4 jobs may run at once"):
        IdentityPool(IdRange(300000, 2), IdRange(300000, 8), needed=4)
    with pytest.raises(SandboxError, match="must not include id 0"):
        IdentityPool(IdRange(0, 10), IdRange(300000, 10), needed=1)


def test_folders_a_job_uid_cannot_walk_to_are_staged(tmp_path: Path) -> None:
    private = tmp_path / "private"
    (private / "jobs" / "job-1").mkdir(parents=True)
    os.chmod(private, 0o700)
    open_folder = Path("/usr/lib")
    assert passable(open_folder) and not passable(private / "jobs")
    staging = Staging.for_data_dir(tmp_path)  # under /run: anyone may pass, no one may list
    staging.stage([(private / "jobs", False), (open_folder, True)])
    try:
        reached = staging.reach(private / "jobs" / "job-1")
        assert reached.parent.parent == staging.root and staging.reach(open_folder) == open_folder
        listed = subprocess.run(["ls", str(reached)], user=65534, capture_output=True, check=False)
        assert listed.returncode == 0  # nobody gets there through the staging folder...
        denied = subprocess.run(["ls", str(private / "jobs" / "job-1")], user=65534, capture_output=True, check=False)
        assert denied.returncode != 0  # ... and not the usual way
    finally:
        staging.close()
    assert not staging.root.exists() and not staging.binds


def test_status_texts_lose_control_characters_and_host_paths() -> None:
    forged = "bwrap: \x1b[31mred\x1b[0m\x00nul\nsecond line\u2028sep /srv/c2d/jobs/abc/disk/data/outputs/x \udcff"
    cleaned = clean_text(forged, (("/srv/c2d/jobs/abc/disk/data/outputs", "/data/outputs"), ("/srv/c2d", "<node>")))
    assert cleaned == "bwrap:  [31mred [0m nul second line sep /data/outputs/x ?"
    assert len(clean_text("x" * 1000)) == 300


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "BASH_ENV", "ENV", "BASH_FUNC_echo%%", "IFS"])
def test_a_step_may_not_set_what_its_launch_would_obey(name: str) -> None:
    step = Step.bare("algorithm", "algorithm", "python", ["true"], env={name: "/data/outputs/evil.so"})
    with pytest.raises(SandboxError, match=f"may not set {name}"):
        step_environment(step, Runtime((), "/usr/bin"))
    assert step_environment(Step.bare("a", "algorithm", "python", ["true"], env={"MY_VAR": "1"}), Runtime((), "/b"))


def test_an_engine_that_is_not_root_says_what_its_sandboxes_lack(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(jobs, 0o777)
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from c2d.settings import EngineSettings\n"
        "from workflows.local.protections import detect\n"
        "found = detect(EngineSettings(), Path(sys.argv[1]))\n"
        "print(found.pool, found.job_disks, found.seccomp is not None)\n"
        "print('\\n'.join(found.missing))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(jobs)], user=65534, group=65534, extra_groups=[], capture_output=True,
        text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    first, *missing = done.stdout.splitlines()
    assert first == "None False True"  # no uids of its own, no disks; the filter still loads
    assert missing == [
        "a host uid of its own per job (the engine is not root: every job runs as the engine's uid)",
        "a file system of its own per job (the engine is not root): disk and file caps are kept by scanning only",
    ]
