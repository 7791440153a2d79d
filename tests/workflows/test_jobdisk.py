"""A job's own file system: made from the template, mounted, capped by the kernel, thrown away whole."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from workflows.exceptions import SandboxError
from workflows.local import jobdisk
from workflows.local.identity import Identity
from workflows.local.jobdisk import INODE_ROOM, RESERVE, JobDisk, mounts, share, unshare

OWNER = Identity(1048999, 1048999)
MiB = 1024**2

if os.geteuid() != 0:  # pragma: no cover - CI runs as root
    pytest.skip("job file systems need root (loop devices, mount)", allow_module_level=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[JobDisk]:
    job = tmp_path / "job with a space\nand a newline"  # mountinfo escapes both
    job.mkdir()
    made = JobDisk(job)
    made.create(16 * MiB, 100 + INODE_ROOM, OWNER)
    yield made
    made.discard()


def _as_owner(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["python3", "-c", script], cwd=cwd, user=OWNER.uid, group=OWNER.gid, extra_groups=[], capture_output=True,
        text=True, check=False,
    )  # fmt: skip


def test_a_disk_is_mounted_owned_and_found_in_mountinfo(disk: JobDisk) -> None:
    assert disk.mounted and str(disk.root) in {entry.mount_point for entry in mounts()}
    info = os.stat(disk.root)
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (OWNER.uid, OWNER.gid, 0o700)
    assert sorted(os.listdir(disk.root)) == [".reserve"]  # no lost+found
    stats = os.statvfs(disk.root)
    assert 16 * MiB <= stats.f_bavail * stats.f_frsize <= 16 * MiB + 4 * MiB  # the cap, and a little metadata slack


def test_the_kernel_holds_the_byte_and_file_caps(disk: JobDisk) -> None:
    fill = (
        "import errno, os\n"
        "try:\n"
        "    with open('big', 'wb') as f:\n"
        "        while True:\n"
        "            f.write(b'1' * 1024 * 1024)\n"
        "except OSError as e:\n"
        "    print(errno.errorcode[e.errno], os.path.getsize('big') // 2**20)\n"
    )
    done = _as_owner(fill, disk.root)
    code, mib = done.stdout.split()
    assert code == "ENOSPC" and 15 <= int(mib) <= 20, done.stdout + done.stderr
    assert disk.exhausted() == "disk"
    os.unlink(disk.root / "big")
    many = (
        "import errno\n"
        "for i in range(10**6):\n"
        "    try:\n"
        "        open(f'f{i}', 'w').close()\n"
        "    except OSError as e:\n"
        "        print(errno.errorcode[e.errno], i)\n"
        "        break\n"
    )
    code, count = _as_owner(many, disk.root).stdout.split()
    assert code == "ENOSPC" and 100 + INODE_ROOM - 64 <= int(count) <= 100 + INODE_ROOM + 64
    assert disk.exhausted() == "files"


def test_the_reserve_is_there_until_publishing(disk: JobDisk) -> None:
    before = os.statvfs(disk.root)
    disk.release_reserve()
    after = os.statvfs(disk.root)
    assert not disk.reserve.exists()
    assert (after.f_bfree - before.f_bfree) * after.f_frsize >= RESERVE
    assert after.f_ffree - before.f_ffree >= jobdisk.RESERVE_INODES
    disk.release_reserve()  # twice is fine


def test_disks_of_one_shape_are_independent_and_sound(tmp_path: Path) -> None:
    disks = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        disks.append(JobDisk(tmp_path / name))
        disks[-1].create(8 * MiB, 64, None)
    try:
        (disks[0].root / "only-in-a").write_text("a")
        assert not (disks[1].root / "only-in-a").exists()
    finally:
        for disk in disks:
            disk.discard()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    disk = JobDisk(fresh)
    disk.create(8 * MiB, 64, None)
    jobdisk.unmount(disk.root)
    check = subprocess.run(["/usr/sbin/e2fsck", "-fn", str(disk.image)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    disk.discard()


def test_discard_unmounts_and_frees_the_loop_device(tmp_path: Path) -> None:
    (tmp_path / "job").mkdir()
    disk = JobDisk(tmp_path / "job")
    disk.create(8 * MiB, 64, None)
    os.chdir(disk.root)  # busy: the unmount is then lazy, the image still goes
    try:
        disk.discard()
    finally:
        os.chdir(tmp_path)
    assert not disk.mounted and not disk.image.exists()
    attached = subprocess.run(["losetup", "-j", str(disk.image)], capture_output=True, text=True, check=False)
    assert attached.stdout == ""


def test_no_room_for_a_disk_is_a_clear_error(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)], check=True)
    try:
        (small / "job").mkdir()
        with pytest.raises(SandboxError, match=r"no room for this job's disk of 0\.01 GiB") as caught:
            JobDisk(small / "job").create(8 * MiB, 64, None)
        assert str(tmp_path) not in str(caught.value)
        assert not (small / "job" / "disk.img").exists()
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_sharing_adopts_its_own_bind_but_not_a_file_system_of_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "jobs"
    folder.mkdir()
    assert share(folder) and share(folder)  # made, then found again (a killed engine's)
    assert next(e for e in reversed(mounts()) if e.mount_point == str(folder)).shared
    unshare(folder)
    assert str(folder) not in {entry.mount_point for entry in mounts()}
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(folder)], check=True)
    try:
        assert not share(folder)  # the operator's: never unmounted by the engine
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_probe_says_why_disks_cannot_be_made(tmp_path: Path) -> None:
    assert jobdisk.probe(tmp_path) is None
    assert os.listdir(tmp_path) == []  # it made and removed one
    read_only = tmp_path / "ro"
    read_only.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(read_only)], check=True)
    try:
        reason = jobdisk.probe(read_only)
    finally:
        subprocess.run(["umount", str(read_only)], check=True)
    assert reason == "the jobs folder cannot hold a disk image (Read-only file system)"
