"""result-filter (example step, Ocean status 50): remove outputs that must not leave the node.

Usage: ``python -m steps.filter --outputs /data/outputs [--deny GLOB]... [--max-file-bytes N]``.
Removes symlinks and special files, files matching a deny glob (default ``*.key``, ``*.pem``) and
files over the size cap; writes what it did to /data/logs/filter.log (published as ``filteringLog``).
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import stat
import sys
from pathlib import Path

from steps.common import setup_logging, walk_entries

DEFAULT_DENY = ("*.key", "*.pem")


@functools.cache  # one per process: the warm step runner's children reuse the one it built
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steps.filter", description=__doc__)
    parser.add_argument("--outputs", type=Path, required=True)
    parser.add_argument("--deny", action="append", default=None, help="glob of file names to remove")
    parser.add_argument("--max-file-bytes", type=int, default=None)
    parser.add_argument("--max-files", type=int, default=None, help="accepted for compatibility; unused")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    outputs: Path = args.outputs
    deny: list[str] = args.deny or list(DEFAULT_DENY)
    log = setup_logging("c2d.filter", outputs.parent / "logs" / "filter.log")
    removed = kept = 0
    for path, relative, info in walk_entries(outputs):
        reason = None
        if not stat.S_ISREG(info.st_mode):
            reason = "not a regular file"
        elif any(fnmatch.fnmatch(path.name, pattern) for pattern in deny):
            reason = "name denied"
        elif args.max_file_bytes is not None and info.st_size > args.max_file_bytes:
            reason = f"{info.st_size} bytes, over {args.max_file_bytes}"
        if reason:
            path.unlink()
            removed += 1
            log.info(f"removed outputs/{relative}: {reason}")
        else:
            kept += 1
    log.info(f"result-filter: kept {kept} file(s), removed {removed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
