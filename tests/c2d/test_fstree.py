"""c2d.fstree on real trees of hostile shapes: deeper than PATH_MAX, wide, sparse, symlinked, mounted."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from c2d.fstree import DEFAULT_MAX_DEPTH, TreeError, Usage, remove_tree, usage, walk
from tests.helpers import nest

LONG = b"d" * 250  # 10,000 of them: a path of 2.5 MB, far beyond PATH_MAX (4,096)
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root (mount, another uid)")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A folder outside pytest's private temporary root (0700): another uid can reach it; ``rm -rf`` (which
    handles any depth) cleans up whatever a failing test left behind."""
    folder = Path(tempfile.mkdtemp(prefix="c2d-fstree-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(folder)], check=False)


def run_python(code: str, *args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parents[2],
        user=user,
        group=user,
    )


def test_a_tree_deeper_than_path_max_is_walked_counted_and_removed_with_few_fds(scratch: Path) -> None:
    tree = scratch / "tree"
    tree.mkdir()
    nest(tree, 10_000, LONG, leaf=b"bottom.txt")
    before = open_fds()
    most = 0
    entries = []
    for entry in walk(tree):
        most = max(most, open_fds())
        entries.append(entry)
    assert [e.depth for e in entries] == list(range(1, DEFAULT_MAX_DEPTH + 1))
    assert all(e.name == LONG and stat.S_ISDIR(e.info.st_mode) for e in entries)
    assert [e.truncated for e in entries] == [False] * (DEFAULT_MAX_DEPTH - 1) + [True]
    assert entries[-1].relative == (LONG,) * DEFAULT_MAX_DEPTH
    assert most - before <= DEFAULT_MAX_DEPTH + 1 and open_fds() == before
    shallow = list(walk(tree, max_depth=3))
    assert [(e.depth, e.truncated) for e in shallow] == [(1, False), (2, False), (3, True)]
    assert usage([tree]) == Usage(0, 0, DEFAULT_MAX_DEPTH + 1)
    # Removed in a process that may not open more than 64 files at once.
    done = run_python(
        """
        import resource, sys
        from pathlib import Path
        from c2d.fstree import remove_tree
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
        remove_tree(Path(sys.argv[1]))
        """,
        str(tree),
    )
    assert done.returncode == 0, done.stderr
    assert not tree.exists() and os.listdir(scratch) == []


def test_the_last_folder_level_is_truncated_only_when_it_has_content(tmp_path: Path) -> None:
    nest(tmp_path, 3, b"x")
    assert [(e.depth, e.truncated) for e in walk(tmp_path, max_depth=3)] == [(1, False), (2, False), (3, False)]
    assert usage([tmp_path], max_depth=3).depth == 3
    (tmp_path / "x" / "x" / "x" / "f").write_text("deep")
    assert [(e.depth, e.truncated) for e in walk(tmp_path, max_depth=3)] == [(1, False), (2, False), (3, True)]
    assert usage([tmp_path], max_depth=3) == Usage(0, 0, 4)
    assert usage([tmp_path], max_depth=4) == Usage(4, 1, 4)


def test_entries_come_sorted_by_name_bytes_folders_before_their_content(tmp_path: Path) -> None:
    for name in (b"b", b"A", b"\xff\xfe", b"a0"):
        os.close(os.open(bytes(tmp_path) + b"/" + name, os.O_WRONLY | os.O_CREAT, 0o644))
    (tmp_path / "a" / "y").mkdir(parents=True)
    (tmp_path / "a" / "x").write_text("x")
    (tmp_path / "a" / "y" / "z").write_text("z")
    assert [e.relative for e in walk(tmp_path)] == [
        (b"A",),
        (b"a",),
        (b"a", b"x"),
        (b"a", b"y"),
        (b"a", b"y", b"z"),
        (b"a0",),
        (b"b",),
        (b"\xff\xfe",),
    ]
    first = next(iter(walk(tmp_path)))
    assert first.name == b"A" and first.depth == 1 and not first.truncated


def test_sparse_files_count_at_their_apparent_size(tmp_path: Path) -> None:
    for index in range(4):
        with open(tmp_path / f"sparse{index}", "wb") as handle:
            handle.truncate(1 << 30)
    assert sum(os.lstat(tmp_path / f"sparse{i}").st_blocks for i in range(4)) * 512 < 1 << 20  # really sparse
    assert usage([tmp_path, tmp_path / "missing"]) == Usage(4 << 30, 4, 1)
    assert [e.info.st_size for e in walk(tmp_path)] == [1 << 30] * 4


def test_symlinks_and_fifos_are_listed_never_followed_or_opened(tmp_path: Path, scratch: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (scratch / "secret").write_text("outside")
    (tree / "to-root").symlink_to("/")
    (tree / "to-outside").symlink_to(scratch)
    os.mkfifo(tree / "pipe")
    (tree / "plain").write_text("p")
    found: list[tuple[bytes, ...]] = []
    # A FIFO opened for reading would block this thread until a writer came: none ever comes.
    worker = threading.Thread(target=lambda: found.extend(e.relative for e in walk(tree)), daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    assert found == [(b"pipe",), (b"plain",), (b"to-outside",), (b"to-root",)]
    kinds = {e.name: stat.S_IFMT(e.info.st_mode) for e in walk(tree)}
    assert kinds[b"pipe"] == stat.S_IFIFO and kinds[b"to-root"] == stat.S_IFLNK
    assert usage([tree]).files == 4
    with pytest.raises(TreeError, match="not a folder"):
        list(walk(tree / "to-outside"))  # the root itself must be a real folder
    assert usage([tree / "to-outside"]) == Usage(0, 0, 0)
    remove_tree(tree)
    assert not tree.exists() and (scratch / "secret").read_text() == "outside"
    remove_tree(tree)  # a missing root: nothing to do


def test_usage_stops_early_past_max_files(tmp_path: Path) -> None:
    for index in range(100):
        (tmp_path / f"f{index:03}").write_bytes(b"x" * 10)
    counted = usage([tmp_path], max_files=10)
    assert counted.files == 11 and counted.bytes == 110
    assert usage([tmp_path]).files == 100


@needs_root
def test_folders_without_permission_are_reported_by_walk_and_removed_by_remove_tree(scratch: Path) -> None:
    """Run as an unprivileged owner (root would read a mode-000 folder anyway)."""
    tree = scratch / "tree"
    (tree / "locked" / "inner").mkdir(parents=True)
    (tree / "locked" / "inner" / "f").write_text("f")
    (tree / "locked" / "g").write_text("g")
    (tree / "open.txt").write_text("o")
    for path in (scratch, tree, tree / "locked", tree / "locked" / "inner", tree / "locked" / "g", tree / "open.txt"):
        os.chown(path, 65534, 65534)
    os.chown(tree / "locked" / "inner" / "f", 65534, 65534)
    (tree / "locked" / "inner").chmod(0)
    (tree / "locked").chmod(0)
    done = run_python(
        """
        import sys
        from pathlib import Path
        from c2d.fstree import remove_tree, walk
        errors = []
        names = [e.relative for e in walk(Path(sys.argv[1]), on_error=lambda rel, exc: errors.append((rel, exc.errno)))]
        print(names, errors)
        remove_tree(Path(sys.argv[1]))
        """,
        str(tree),
        user=65534,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[(b'locked',), (b'open.txt',)] [((b'locked',), 13)]"
    assert not tree.exists()


@needs_root
@pytest.mark.parametrize("kind", ["bind", "tmpfs"])
def test_a_mount_inside_the_tree_stops_remove_tree_and_nothing_past_it_is_touched(scratch: Path, kind: str) -> None:
    tree, outside = scratch / "tree", scratch / "outside"
    (tree / "sub" / "mnt").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (outside / "locked").mkdir(mode=0o500)
    command = ["mount", "--bind", str(outside), str(tree / "sub" / "mnt")]
    if kind == "tmpfs":
        command = ["mount", "-t", "tmpfs", "-o", "size=1m", "c2d-test", str(tree / "sub" / "mnt")]
    subprocess.run(command, check=True)
    try:
        mounted = tree / "sub" / "mnt"
        if kind == "tmpfs":
            (mounted / "keep.txt").write_text("keep")
            (mounted / "locked").mkdir(mode=0o500)
        errors: list[tuple[tuple[bytes, ...], int | None]] = []
        walked = [e.relative for e in walk(tree, on_error=lambda rel, exc: errors.append((rel, exc.errno)))]
        if kind == "tmpfs":  # another file system: listed, not entered
            assert walked == [(b"a.txt",), (b"sub",), (b"sub", b"mnt")] and errors == [((b"sub", b"mnt"), 18)]
        with pytest.raises(TreeError, match="mount point"):
            remove_tree(tree)
        assert (mounted / "keep.txt").read_text() == "keep"
        assert stat.S_IMODE((mounted / "locked").stat().st_mode) == 0o500
        assert subprocess.run(["mountpoint", "-q", str(mounted)], check=False).returncode == 0
    finally:
        subprocess.run(["umount", str(tree / "sub" / "mnt")], check=False)
    assert (outside / "keep.txt").read_text() == "keep"
    remove_tree(tree)  # once unmounted, the rest goes
    assert not tree.exists() and outside.exists()


@pytest.fixture
def fast_folder(scratch: Path) -> Iterator[Path]:
    """A tmpfs when we are root (200,000 files made in ~1.5 s, not a minute on a busy disk)."""
    if not ROOT:
        yield scratch
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,nr_inodes=300k", "c2d-test", str(scratch)], check=True)
    try:
        yield scratch
    finally:
        subprocess.run(["umount", str(scratch)], check=False)


def test_two_hundred_thousand_files_in_one_folder_with_few_fds(fast_folder: Path) -> None:
    flat = fast_folder / "flat"
    flat.mkdir()
    fd = os.open(flat, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for index in range(200_000):
            os.close(os.open(f"{index:06}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
    finally:
        os.close(fd)
    before = open_fds()
    most, count, last = 0, 0, b""
    for entry in walk(flat):
        if count % 20_000 == 0:
            most = max(most, open_fds())
        assert entry.name > last
        count, last = count + 1, entry.name
    assert count == 200_000 and most - before <= 1
    assert usage([flat]).files == 200_000
    remove_tree(flat)
    assert not flat.exists() and open_fds() == before


def test_remove_tree_unlinks_a_root_that_is_a_symlink_or_a_file(tmp_path: Path) -> None:
    target = tmp_path / "target"
    (target / "inside").mkdir(parents=True)
    (tmp_path / "link").symlink_to(target)
    remove_tree(tmp_path / "link")
    assert not (tmp_path / "link").exists() and (target / "inside").is_dir()
    (tmp_path / "file").write_text("f")
    remove_tree(tmp_path / "file")
    assert not (tmp_path / "file").exists()
