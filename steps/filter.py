"""result-filter (example step, Ocean status 50): remove outputs that must not leave the node.

Usage: ``python -m steps.filter --outputs /data/outputs [--deny GLOB]... [--max-file-bytes N] [--max-depth N]``.
Removes symlinks and special files, files matching a deny glob (default ``*.key``, ``*.pem``) and
files over the size cap; writes what it did to /data/logs/filter.log (published as ``filteringLog``).
The outputs are walked with :func:`c2d.fstree.walk` (no symlink followed, no path built, at most
``--max-depth`` levels) and removed relative to their folder's descriptor, never by path. Entries past
the depth cap, and folders that cannot be read, are left as they are (output-publish does not publish
them either); each gets a line.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import os
import stat
import sys
from pathlib import Path

from c2d.fstree import DEFAULT_MAX_DEPTH, TreeError, walk
from steps.common import safe_name, setup_logging
from steps.exceptions import StepError

DEFAULT_DENY = ("*.key", "*.pem")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


@functools.cache  # one per process: the warm step runner's children reuse the one it built
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steps.filter", description=__doc__)
    parser.add_argument("--outputs", type=Path, required=True)
    parser.add_argument("--deny", action="append", default=None, help="glob of file names to remove")
    parser.add_argument("--max-file-bytes", type=int, default=None)
    parser.add_argument("--max-files", type=int, default=None, help="accepted for compatibility; unused")
    parser.add_argument("--max-depth", type=_positive, default=DEFAULT_MAX_DEPTH, help="folder levels checked")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    outputs: Path = args.outputs
    deny = [os.fsencode(pattern) for pattern in args.deny or DEFAULT_DENY]
    log = setup_logging("c2d.filter", outputs.parent / "logs" / "filter.log")
    removed = kept = 0

    def unreadable(relative: tuple[bytes, ...], exc: OSError) -> None:
        log.warning(f"left outputs/{safe_name(b'/'.join(relative))}: cannot be read ({exc.strerror})")

    if not os.path.lexists(outputs):
        log.info("result-filter: no outputs folder")
        return 0
    try:
        for entry in walk(outputs, max_depth=args.max_depth, on_error=unreadable):
            shown = f"outputs/{safe_name(b'/'.join(entry.relative))}"
            info = entry.info
            reason = None
            if stat.S_ISDIR(info.st_mode):
                if entry.truncated:
                    log.warning(f"left {shown}/: deeper than {args.max_depth} levels (not published)")
                continue
            if not stat.S_ISREG(info.st_mode):
                reason = "not a regular file"
            elif any(fnmatch.fnmatchcase(entry.name, pattern) for pattern in deny):
                reason = "name denied"
            elif args.max_file_bytes is not None and info.st_size > args.max_file_bytes:
                reason = f"{info.st_size} bytes, over {args.max_file_bytes}"
            if reason is None:
                kept += 1
                continue
            try:
                os.unlink(entry.name, dir_fd=entry.parent_fd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise StepError(f"cannot remove {shown}: {exc.strerror}") from None
            removed += 1
            log.info(f"removed {shown}: {reason}")
    except (StepError, TreeError) as exc:
        log.error(f"result-filter failed: {exc}")
        return StepError.exit_code
    log.info(f"result-filter: kept {kept} file(s), removed {removed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
