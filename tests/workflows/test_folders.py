"""The engine's jobs folder and results store spread their subfolders over an ext4 disk's block groups."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import pytest

from workflows.local.engine import LocalEngine
from workflows.local.folders import is_top_directory, spread_subfolders


def _file_system(path: Path) -> str:
    found = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, check=True)
    return found.stdout.strip()


def _needs_ext(path: Path) -> None:
    kind = _file_system(path)
    if not kind.startswith("ext"):
        pytest.skip(f"{path} is on {kind}, which has no top-of-hierarchy flag (only ext2/3/4 place folders by it)")


def _block_group(path: Path) -> int:
    """The block group of ``path``'s inode (ext4 geometry: a group has 8 x block-size blocks)."""
    fs = os.statvfs(path)
    groups = math.ceil(fs.f_blocks / (8 * fs.f_bsize))
    return (os.stat(path).st_ino - 1) // (fs.f_files // groups)


def test_a_marked_folder_spreads_its_subfolders(tmp_path: Path) -> None:
    _needs_ext(tmp_path)
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    plain.mkdir()
    marked.mkdir()
    assert not is_top_directory(marked)
    assert spread_subfolders(marked)
    assert is_top_directory(marked) and not is_top_directory(plain)
    assert spread_subfolders(marked) and is_top_directory(marked)  # idempotent
    groups = set()
    for index in range(24):
        (marked / f"job-{index}").mkdir()
        groups.add(_block_group(marked / f"job-{index}"))
    # placed as top-level folders are: each in the emptiest block group the allocator finds, so not all in
    # one. How many groups depends on the disk's state: 12 of 12 on this disk in 300 tries, 4 of 12 once
    # on a disk busy with a test run, so the bound here is loose; the flag above is the exact check.
    assert len(groups) >= 2, groups


def test_no_flag_where_the_file_system_has_none(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if _file_system(shm) != "tmpfs":
        pytest.skip("/dev/shm is not a tmpfs here")
    folder = Path(os.path.realpath(shm)) / f"c2d-test-{os.getpid()}"
    folder.mkdir()
    try:
        assert not spread_subfolders(folder)
        assert not is_top_directory(folder)
    finally:
        folder.rmdir()


def test_the_engine_marks_its_jobs_folder_and_store(engine: LocalEngine) -> None:
    _needs_ext(engine.settings.jobs_dir)
    assert is_top_directory(engine.settings.jobs_dir)
    assert is_top_directory(engine.settings.store_dir)
