"""output-publish: store every output file and the logs, then write the result list.

Usage: ``python -m steps.publish --data /data --job-id <id> --target <dir | s3://bucket/prefix | ipfs>``.
Outputs are the regular files under /data/outputs (recursively; symlinks and special files are
skipped and reported), then algorithm.log, filter.log, configure.log and publish.log. Each is stored
whole or not at all (:mod:`steps.targets`), transient store failures are retried, and the result
list (``/data/results.json`` and the target's ``results.json``) is written last: an interrupted
publish never lists a partial result. Exit 0; 75 when the store stayed unreachable (the engine runs
the step again); 62 when storing failed.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from steps.common import ADMINLOGS, LOGS, OUTPUTS, human_bytes, retrying, setup_logging, walk_entries
from steps.exceptions import PublishError, StepError, TransientPublishError
from steps.targets import Target, open_target, write_json_atomic

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


class Publisher:
    def __init__(self, data: Path, target: Target, max_files: int, log: logging.Logger) -> None:
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
        items = self.items()
        outputs = sum(1 for item in items if item.type == "output")
        self.log.info(f"output-publish: {outputs} output file(s) and {len(items) - outputs} log(s)")
        results: list[dict[str, object]] = []
        for item in items:
            relative = f"{'outputs' if item.type == 'output' else 'logs'}/{item.name}"
            try:
                size = os.lstat(item.source).st_size
                put = functools.partial(self.target.put, item.source, relative)
                location = retrying(put, TransientPublishError, self.log, item.name)
            except TransientPublishError:
                raise
            except (PublishError, OSError) as exc:
                if item.type == "output":
                    raise PublishError(str(exc)) from None
                self.log.warning(f"skipped {item.name}: {exc}")
                continue
            self.log.info(f"  {item.type} {item.name}: {human_bytes(size)}")
            results.append({"filename": item.name, "filesize": size, "type": item.type, **location})
        # The list goes last, to the store and to the engine: a publish cut short lists nothing.
        retrying(lambda: self.target.finish(results), TransientPublishError, self.log, "result list")
        write_json_atomic(self.data / "results.json", results)
        self.log.info(f"published {len(results)} file(s)")
        return 0


@functools.cache  # one per process: the warm step runner's children reuse the one it built
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steps.publish", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--target", required=True, help="this job's results: a folder, s3://<bucket>/<prefix> or ipfs")
    parser.add_argument("--max-files", type=int, default=10_000)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log = setup_logging("c2d.publish", args.data / ADMINLOGS / "publish.log")
    try:
        return Publisher(args.data, open_target(args.target), args.max_files, log).run()
    except StepError as exc:
        log.error(f"publishing failed: {exc}")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
