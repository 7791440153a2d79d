"""output-publish: store every output file and the logs, then write the result list.

Usage: ``python -m steps.publish --data /data --job-id <id> --target <dir>``. Outputs are the regular
files under /data/outputs (recursively; symlinks and special files are skipped and reported), then
algorithm.log, filter.log, configure.log and publish.log. Each is copied under a temporary name and
renamed, and the result list (``/data/results.json`` and ``<target>/results.json``) is written last,
atomically: an interrupted publish never lists a partial result. Exit 0, or 62 when storing failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from steps.common import ADMINLOGS, LOGS, OUTPUTS, human_bytes, setup_logging, walk_entries
from steps.exceptions import PublishError, StepError

CHUNK = 1024 * 1024
LOG_FILES = (
    (LOGS, "algorithm.log", "algorithmLog"),
    (LOGS, "filter.log", "filteringLog"),
    (ADMINLOGS, "configure.log", "configurationLog"),
    (ADMINLOGS, "publish.log", "publishLog"),
)


@dataclass(frozen=True)
class Item:
    source: Path
    name: str  # name in the result list and in the store
    type: str


def walk_outputs(outputs: Path, log: logging.Logger, max_files: int) -> Iterator[Item]:
    """Regular files under ``outputs``, sorted; never follows a symlink."""
    count = 0
    for path, relative, info in walk_entries(outputs):
        if not stat.S_ISREG(info.st_mode):
            kind = "symlink" if stat.S_ISLNK(info.st_mode) else "special file"
            log.warning(f"skipped {kind} outputs/{relative}: only regular files are published")
            continue
        if count >= max_files:
            log.error(f"more than {max_files} output files: outputs/{relative} and the rest are not published")
            return
        count += 1
        yield Item(path, relative, "output")


def copy_file(source: Path, dest: Path) -> int:
    """Copy without following a symlink at ``source``; write under a temporary name, then rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    size = 0
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PublishError(f"{source.name} is not a regular file")
        with open(tmp, "wb") as out:
            while chunk := os.read(fd, CHUNK):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PublishError(f"cannot store {dest.name}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return size


def write_json_atomic(path: Path, value: object) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(value, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class Publisher:
    def __init__(self, data: Path, target: Path, max_files: int, log: logging.Logger) -> None:
        self.data = data
        self.target = target
        self.max_files = max_files
        self.log = log

    def items(self) -> list[Item]:
        items = list(walk_outputs(self.data / OUTPUTS, self.log, self.max_files))
        for folder, name, kind in LOG_FILES:
            path = self.data / folder / name
            if os.path.lexists(path):
                items.append(Item(path, name, kind))
        return items

    def run(self) -> int:
        if not self.target.is_dir():
            raise PublishError(f"results store {self.target} is not a folder")
        items = self.items()
        outputs = sum(1 for item in items if item.type == "output")
        self.log.info(f"output-publish: {outputs} output file(s) and {len(items) - outputs} log(s)")
        results: list[dict[str, object]] = []
        for item in items:
            folder = "outputs" if item.type == "output" else "logs"
            try:
                size = copy_file(item.source, self.target / folder / item.name)
            except PublishError as exc:
                if item.type == "output":
                    raise
                self.log.warning(f"skipped {item.name}: {exc}")
                continue
            self.log.info(f"  {item.type} {item.name}: {human_bytes(size)}")
            results.append(
                {"filename": item.name, "filesize": size, "type": item.type, "path": f"{folder}/{item.name}"}
            )
        write_json_atomic(self.target / "results.json", results)
        write_json_atomic(self.data / "results.json", results)
        self.log.info(f"published {len(results)} file(s)")
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steps.publish", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--target", type=Path, required=True, help="results store folder of this job")
    parser.add_argument("--max-files", type=int, default=10_000)
    args = parser.parse_args(argv)
    log = setup_logging("c2d.publish", args.data / ADMINLOGS / "publish.log")
    try:
        return Publisher(args.data, args.target, args.max_files, log).run()
    except StepError as exc:
        log.error(f"publishing failed: {exc}")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
