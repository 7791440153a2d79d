"""output-publish on outputs and logs a hostile algorithm shaped: deep trees, FIFOs, odd names, sparse
files, outputs the store refuses, unreadable modes. Real files, ``steps.publish.main`` run in-process."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from c2d.fstree import remove_tree
from steps import publish
from tests.helpers import nest

LONG = b"d" * 250
MIB = 1024 * 1024


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """/data as the engines lay it out, with an algorithm log."""
    root = tmp_path / "data"
    for folder in ("outputs", "logs", "adminlogs"):
        (root / folder).mkdir(parents=True)
    (root / "logs" / "algorithm.log").write_text("algorithm ran\n")
    return root


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    return folder


def run_publish(data: Path, store: Path, *extra: str) -> int:
    try:
        return publish.main(["--data", str(data), "--job-id", "j", "--target", str(store), *extra])
    finally:
        logger = logging.getLogger("c2d.publish")
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()


def listed(data: Path) -> list[dict[str, object]]:
    raw = (data / "results.json").read_bytes()
    value: list[dict[str, object]] = json.loads(raw.decode("utf-8"))  # strict: no lone surrogate can pass
    return value


def names(data: Path, kind: str | None = "output") -> list[str]:
    return [str(r["filename"]) for r in listed(data) if kind is None or r["type"] == kind]


def log_lines(data: Path) -> list[str]:
    return (data / "adminlogs" / "publish.log").read_text(encoding="utf-8").splitlines()


def lines_with(data: Path, text: str) -> list[str]:
    return [line for line in log_lines(data) if text in line]


def assert_no_host_path(data: Path, *texts: str) -> None:
    host = str(data.parent)
    for text in (*texts, (data / "adminlogs" / "publish.log").read_text(encoding="utf-8")):
        assert host not in text


def stored_bytes(store: Path) -> int:
    return sum(os.lstat(os.path.join(folder, f)).st_size for folder, _, files in os.walk(store) for f in files)


@pytest.mark.parametrize("name", [LONG, b"d"], ids=["250-byte names", "1-byte names"])
def test_a_tree_ten_thousand_folders_deep_publishes_what_is_near_the_top_and_every_log(
    data: Path, store: Path, name: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    outputs = data / "outputs"
    nest(outputs, 10_000, name, leaf=b"bottom.txt", body=b"at the bottom\n")
    top = name.decode()
    (outputs / top / top / "shallow.txt").write_text("near the top\n")
    try:
        assert run_publish(data, store) == 0
    finally:
        remove_tree(outputs / top)  # pytest's own clean-up recurses once per level
    shallow = f"{top}/{top}/shallow.txt"
    assert names(data) == [shallow]
    assert names(data, kind=None) == [shallow, "algorithm.log", "publish.log"]
    assert (store / "outputs" / shallow).read_text() == "near the top\n"
    assert (store / "logs" / "algorithm.log").read_text() == "algorithm ran\n"
    truncated = lines_with(data, "deeper than 64 levels")
    assert len(truncated) == 1 and f"outputs/{top}/{top}/"[:60] in truncated[0] and len(truncated[0]) < 600
    assert json.loads((store / "results.json").read_text()) == listed(data)
    assert_no_host_path(data, *capfd.readouterr())


def test_fifos_as_the_algorithm_log_and_as_an_output_are_skipped_without_blocking(
    data: Path, store: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    (data / "logs" / "algorithm.log").unlink()
    os.mkfifo(data / "logs" / "algorithm.log")
    os.mkfifo(data / "outputs" / "pipe")
    (data / "outputs" / "result.txt").write_text("42\n")
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(run_publish(data, store)), daemon=True)
    worker.start()
    worker.join(20)
    finished = not worker.is_alive()
    if not finished:  # free the publish blocked on a FIFO, so that the test process can end
        for fifo in (data / "logs" / "algorithm.log", data / "outputs" / "pipe"):
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(20)
    assert finished, "publishing blocked on a FIFO"
    assert codes == [0]
    assert names(data, kind=None) == ["result.txt", "publish.log"]
    assert len(lines_with(data, "outputs/pipe")) == 1 and "FIFO" in lines_with(data, "outputs/pipe")[0]
    assert len(lines_with(data, "logs/algorithm.log")) == 1
    assert "FIFO" in lines_with(data, "logs/algorithm.log")[0]
    assert sorted(os.listdir(store / "outputs")) == ["result.txt"] and not (store / "logs" / "algorithm.log").exists()
    assert_no_host_path(data, *capfd.readouterr())


def test_odd_names_do_not_lose_the_other_results(data: Path, store: Path, capfd: pytest.CaptureFixture[str]) -> None:
    outputs = data / "outputs"
    with os.fdopen(os.open(bytes(outputs) + b"/bad\xff\n.txt", os.O_WRONLY | os.O_CREAT, 0o644), "wb") as handle:
        handle.write(b"not utf-8\n")
    longest = "n" * 251 + ".txt"  # 255 bytes: the longest name the file system allows
    (outputs / longest).write_text("long\n")
    (outputs / "x").write_text("x itself\n")
    (outputs / ".x.part").write_text("the other one\n")
    assert run_publish(data, store) == 0
    results = listed(data)
    assert names(data) == [".x.part", longest, "x"]
    assert json.dumps(results, ensure_ascii=False).encode("utf-8")  # strict UTF-8: storable in Postgres jsonb
    assert (store / "outputs" / longest).read_text() == "long\n"
    assert (store / "outputs" / "x").read_text() == "x itself\n"
    assert (store / "outputs" / ".x.part").read_text() == "the other one\n"
    assert sorted(os.listdir(store / "outputs")) == sorted([".x.part", longest, "x"])  # no temporary left
    assert [r["filesize"] for r in results[:3]] == [14, 5, 9]
    skipped = lines_with(data, "not valid UTF-8")
    assert len(skipped) == 1 and "outputs/bad\\xff\\n.txt" in skipped[0]  # escaped: no forged line
    assert not any(line.startswith(".txt") for line in log_lines(data))
    assert_no_host_path(data, *capfd.readouterr())


def test_sparse_outputs_are_published_within_the_byte_budget(
    data: Path, store: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    for index in range(8):
        with open(data / "outputs" / f"sparse{index}.bin", "wb") as handle:
            handle.truncate(255 * MIB)
    (data / "outputs" / "small.txt").write_text("still fits\n")
    with open(data / "logs" / "filter.log", "wb") as handle:  # the algorithm may write there too
        handle.truncate(1 << 30)
    (data / "adminlogs" / "configure.log").write_text("inputs fetched\n")
    assert run_publish(data, store, "--max-bytes", str(256 * MIB)) == 0
    assert stored_bytes(store) <= 256 * MIB
    assert names(data) == ["small.txt", "sparse0.bin"]  # sparse0 fits; none of the others does
    assert os.lstat(store / "outputs" / "sparse0.bin").st_size == 255 * MIB
    over = lines_with(data, "over the bytes left")
    assert [line.split("skipped ")[1].split(":")[0] for line in over] == [
        *(f"outputs/sparse{i}.bin" for i in range(1, 8)),
        "logs/filter.log",
    ]
    # The algorithm's small log still fits; the engine's own logs always have room.
    assert names(data, kind=None)[2:] == ["algorithm.log", "configure.log", "publish.log"]
    assert_no_host_path(data, *capfd.readouterr())


def test_an_output_the_store_refuses_is_skipped_and_the_rest_published(
    data: Path, store: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    outputs = data / "outputs"
    for name in ("a.txt", "b.txt", "sub/c.txt", "z.txt"):
        (outputs / name).parent.mkdir(parents=True, exist_ok=True)
        (outputs / name).write_text(name)
    (store / "outputs" / "b.txt").mkdir(parents=True)  # a folder where b.txt would go
    (store / "outputs" / "sub").write_text("a file where the folder sub would go")
    assert run_publish(data, store) == 0
    assert names(data) == ["a.txt", "z.txt"]
    assert (store / "outputs" / "z.txt").read_text() == "z.txt"
    assert len(lines_with(data, "cannot store outputs/b.txt: Is a directory")) == 1
    assert len(lines_with(data, "cannot store outputs/sub/c.txt")) == 1
    assert not [name for _, _, files in os.walk(store) for name in files if name.endswith(".part")]
    assert_no_host_path(data, *capfd.readouterr())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the step as another uid")
def test_outputs_and_logs_with_mode_000_are_published_by_their_owner() -> None:
    """The algorithm ran as the step's uid and chmod-ed its files 000: the step (not root, which reads
    anything) makes them readable by their owner and publishes them."""
    scratch = Path(tempfile.mkdtemp(prefix="c2d-publish-"))
    try:
        data, store = scratch / "data", scratch / "store"
        for folder in ("outputs/deep", "logs", "adminlogs"):
            (data / folder).mkdir(parents=True)
        store.mkdir()
        (data / "outputs" / "deep" / "locked.txt").write_text("locked\n")
        (data / "outputs" / "sealed").mkdir()
        (data / "outputs" / "sealed" / "inside.txt").write_text("unreadable folder\n")
        (data / "logs" / "algorithm.log").write_text("algorithm ran\n")
        for folder, dirs, files in os.walk(scratch):
            for name in [".", *dirs, *files]:
                os.chown(os.path.join(folder, name), 65534, 65534)
        (data / "outputs" / "deep" / "locked.txt").chmod(0)
        (data / "logs" / "algorithm.log").chmod(0)
        (data / "outputs" / "sealed").chmod(0)
        cmd = [sys.executable, "-m", "steps.publish", "--data", str(data), "--job-id", "j", "--target", str(store)]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=60, user=65534, group=65534, cwd=Path(__file__).parents[2]
        )
        assert done.returncode == 0, done.stderr
        assert names(data, kind=None) == ["deep/locked.txt", "algorithm.log", "publish.log"]
        assert (store / "outputs" / "deep" / "locked.txt").read_text() == "locked\n"
        assert (store / "logs" / "algorithm.log").read_text() == "algorithm ran\n"
        assert len(lines_with(data, "outputs/sealed: cannot be read (Permission denied)")) == 1
        assert str(scratch) not in done.stderr
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)


def test_symlinks_deep_folders_and_long_names_get_one_line_each(
    data: Path, store: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    outputs = data / "outputs"
    (outputs / "to-root").symlink_to("/")
    (outputs / "passwd").symlink_to("/etc/passwd")
    (outputs / "ok.txt").write_text("ok")
    (outputs / "a" / "b" / "c" / "d").mkdir(parents=True)
    (outputs / "a" / "b" / "c" / "d" / "deep.txt").write_text("deep")
    (outputs / "a" / "b" / "shallow.txt").write_text("shallow")
    folders = outputs / "/".join([LONG.decode()] * 3)
    folders.mkdir(parents=True)
    (folders / ("f" * 200)).write_text("a name of 953 bytes")
    assert run_publish(data, store, "--max-depth", "4") == 0
    assert names(data) == ["a/b/shallow.txt", "ok.txt"]
    assert len(lines_with(data, "outputs/to-root")) == 1 and len(lines_with(data, "outputs/passwd")) == 1
    assert "symlink" in lines_with(data, "outputs/passwd")[0]
    assert len(lines_with(data, "outputs/a/b/c/d/: deeper than 4 levels")) == 1
    assert len(lines_with(data, "longer than 900 bytes")) == 1
    assert not (store / "outputs" / "passwd").exists() and not (store / "outputs" / "a" / "b" / "c").exists()
    assert sorted(os.listdir(store / "outputs")) == ["a", "ok.txt"]
    assert_no_host_path(data, *capfd.readouterr())


def test_the_filter_walks_hostile_outputs_without_following_or_blocking(data: Path, tmp_path: Path) -> None:
    from steps import filter as result_filter

    outputs = data / "outputs"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "server.key").write_text("not the algorithm's")
    (outputs / "elsewhere").symlink_to(outside)
    os.mkfifo(outputs / "pipe")
    os.mkfifo(data / "logs" / "filter.log")  # planted where the filter writes its log
    with os.fdopen(os.open(bytes(outputs) + b"/id\xff\n.key", os.O_WRONLY | os.O_CREAT, 0o644), "wb") as handle:
        handle.write(b"secret")
    (outputs / "a" / "b").mkdir(parents=True)
    (outputs / "a" / "b" / "deep.pem").write_text("past the cap: left, never published")
    (outputs / "a" / "keep.txt").write_text("kept")
    codes: list[int] = []

    def run() -> None:
        try:
            codes.append(result_filter.main(["--outputs", str(outputs), "--max-depth", "2"]))
        finally:
            logger = logging.getLogger("c2d.filter")
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
                handler.close()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # free a filter blocked on the FIFO, so that the test process can end
        with contextlib.suppress(OSError):
            os.close(os.open(data / "logs" / "filter.log", os.O_RDONLY | os.O_NONBLOCK))
    assert codes == [0]
    assert sorted(os.listdir(outputs)) == ["a"] and (outputs / "a" / "b" / "deep.pem").exists()
    assert (outside / "server.key").exists()
    log = (data / "logs" / "filter.log").read_text(encoding="utf-8")
    assert "removed outputs/id\\xff\\n.key: name denied" in log
    assert "left outputs/a/b/: deeper than 2 levels" in log and str(tmp_path) not in log
