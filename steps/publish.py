"""output-publish: store every output file and the logs, then write the result list.

Usage: ``python -m steps.publish --data /data --job-id <id> --target <dir | s3://bucket/prefix | ipfs>
[--max-files N] [--max-bytes N] [--max-depth N]``.

The outputs and the logs were written by the algorithm, hostile code: any shape, any name, any file
type. Outputs are the regular files under /data/outputs (:func:`c2d.fstree.walk`: depth-first, sorted
by name bytes, at most ``--max-depth`` levels, no symlink followed, no path string built), then
algorithm.log, filter.log, configure.log and publish.log. Every entry that is not published gets one
line in publish.log saying what and why, and publishing goes on with the rest: symlinks and special
files, folders past the depth cap or that cannot be read, names that are not strict UTF-8 (the result
list must be storable as Postgres jsonb) or longer than 900 bytes, files over the byte budget, files
past ``--max-files`` (one line for them all), and files the store refuses for a reason of their own
(names in lines are escaped by :func:`steps.common.safe_name`; past 1,000 such lines the rest are only
counted, so that publish.log stays small). Each source is opened
once, relative to its folder's descriptor, without following a symlink and without blocking (a FIFO
never hangs the step), checked to be a regular file with fstat, and read from that descriptor only.

Byte budget (``--max-bytes``, the environment's disk cap): outputs, algorithm.log and filter.log are
counted at their apparent size (a sparse file counts whole), after room is set aside for the engine's
own configure.log and publish.log (trusted and small: always published). A file that does not fit
what is left is skipped; smaller later files may still go.

Each file is stored whole or not at all (:mod:`steps.targets`), transient store failures are retried,
and the result list (``/data/results.json`` and the target's ``results.json``) is written last: an
interrupted publish never lists a partial result. Exit 0; 75 when the store stayed unreachable (the
engine runs the step again); 62 when the store itself failed (unusable, full).
"""

from __future__ import annotations

import argparse
import errno
import functools
import logging
import os
import stat
import sys
from pathlib import Path

from c2d.fstree import DEFAULT_MAX_DEPTH, TreeError, walk
from steps.common import ADMINLOGS, LOGS, OUTPUTS, human_bytes, retrying, safe_name, setup_logging
from steps.exceptions import StepError, TransientPublishError
from steps.targets import ItemRefusedError, Source, Target, open_target, write_json_atomic

LOG_FILES = (
    (LOGS, "algorithm.log", "algorithmLog"),
    (LOGS, "filter.log", "filteringLog"),
    (ADMINLOGS, "configure.log", "configurationLog"),
    (ADMINLOGS, "publish.log", "publishLog"),
)
TRUSTED_KINDS = frozenset({"configurationLog", "publishLog"})  # the engine's own logs: outside the algorithm's reach
MAX_NAME_BYTES = 900  # S3 keys are at most 1,024 bytes, the job's prefix included
PUBLISH_LOG_RESERVE = 512 * 1024  # room kept for publish.log (bounded by LINE_CAP lines of bounded length)
LINE_CAP = 1000  # lines naming skipped entries, and lines naming published files: each at most this many
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def describe(mode: int) -> str:
    """What a non-regular file is, for a log line."""
    kinds = (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "folder"),
    )
    return next((text for test, text in kinds if test(mode)), "special file")


def _open(parent_fd: int, name: bytes) -> int:
    return os.open(name, OPEN_FLAGS, dir_fd=parent_fd)


def open_source(parent_fd: int, name: bytes) -> int:
    """``name`` in the folder open at ``parent_fd``, opened once for reading: never through a symlink,
    never blocking (a FIFO opens at once, and is refused), fstat must say it is a regular file, then
    O_NONBLOCK is cleared. A file its owner cannot read (the algorithm chmod-ed it 000 as the step's uid)
    is made readable by its owner (chmod through ``parent_fd``, never following a symlink) and opened
    again, once. ItemRefusedError (the reason, no name) when it cannot be opened as a regular file."""
    try:
        fd = _open(parent_fd, name)
    except PermissionError:
        try:
            mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
            if not stat.S_ISREG(mode):
                raise ItemRefusedError(f"now a {describe(mode)}: only regular files are published") from None
            os.chmod(name, stat.S_IMODE(mode) | stat.S_IRUSR, dir_fd=parent_fd, follow_symlinks=False)
            fd = _open(parent_fd, name)
        except OSError as exc:
            raise ItemRefusedError(f"cannot be read ({exc.strerror})") from None
        except (ValueError, NotImplementedError):  # no-follow chmod refused: a symlink swapped in, or no /proc
            raise ItemRefusedError("cannot be read, and its mode cannot be changed safely") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink (swapped in since the lstat)
            raise ItemRefusedError("now a symlink: only regular files are published") from None
        raise ItemRefusedError(f"cannot be opened ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ItemRefusedError(f"now a {describe(mode)}: only regular files are published")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


class Publisher:
    """One publish: the outputs, then the logs, then the result list; ``results`` lists exactly what was stored."""

    def __init__(
        self,
        data: Path,
        target: Target,
        log: logging.Logger,
        *,
        max_files: int = 10_000,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_bytes: int | None = None,
    ) -> None:
        self.data = data
        self.target = target
        self.log = log
        self.max_files = max_files
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.left: int | None = None  # bytes left for outputs, algorithm.log and filter.log
        self.results: list[dict[str, object]] = []
        self.skipped = 0
        self.listed = 0

    def skip(self, message: str) -> None:
        """One line for one entry that is not published (the first LINE_CAP; then the count only)."""
        self.skipped += 1
        if self.skipped <= LINE_CAP:
            self.log.warning(message)
        elif self.skipped == LINE_CAP + 1:
            self.log.warning(f"more than {LINE_CAP} entries not published: the others are only counted")

    def run(self) -> int:
        if self.max_bytes is not None:
            self.left = max(0, self.max_bytes - self._reserve())
        self.log.info("output-publish: the outputs, then the logs")
        self.publish_outputs()
        for folder, name, kind in LOG_FILES:
            self.publish_log(folder, name, kind)
        # The list goes last, to the store and to the engine: a publish cut short lists nothing.
        retrying(lambda: self.target.finish(self.results), TransientPublishError, self.log, "result list")
        write_json_atomic(self.data / "results.json", self.results)
        outputs = sum(1 for result in self.results if result["type"] == "output")
        self.log.info(
            f"published {outputs} output file(s) and {len(self.results) - outputs} log(s); "
            f"{self.skipped} entr{'y' if self.skipped == 1 else 'ies'} not published"
        )
        return 0

    def _reserve(self) -> int:
        """Room kept for the engine's own logs: configure.log as it is, publish.log as it may grow."""
        try:
            configure = os.lstat(self.data / ADMINLOGS / "configure.log").st_size
        except FileNotFoundError:
            configure = 0
        return configure + PUBLISH_LOG_RESERVE

    def publish_outputs(self) -> None:
        outputs = self.data / OUTPUTS
        if not os.path.lexists(outputs):
            self.log.info("no outputs folder: no output to publish")
            return

        def unreadable(relative: tuple[bytes, ...], exc: OSError) -> None:
            self.skip(f"skipped outputs/{safe_name(b'/'.join(relative))}: cannot be read ({exc.strerror})")

        count = 0
        try:
            for entry in walk(outputs, max_depth=self.max_depth, on_error=unreadable):
                shown = f"outputs/{safe_name(b'/'.join(entry.relative))}"
                mode = entry.info.st_mode
                if stat.S_ISDIR(mode):
                    if entry.truncated:
                        self.skip(
                            f"skipped {shown}/: deeper than {self.max_depth} levels: its content is not published"
                        )
                    continue
                if not stat.S_ISREG(mode):
                    self.skip(f"skipped {describe(mode)} {shown}: only regular files are published")
                    continue
                try:
                    relative = "/".join(part.decode("utf-8") for part in entry.relative)
                except UnicodeDecodeError:
                    self.skip(f"skipped {shown}: its name is not valid UTF-8")
                    continue
                if len(relative.encode()) > MAX_NAME_BYTES:
                    self.skip(f"skipped {shown}: its name is longer than {MAX_NAME_BYTES} bytes")
                    continue
                if count >= self.max_files:
                    self.log.error(f"more than {self.max_files} output files: {shown} and the rest are not published")
                    return
                count += 1
                self.store(entry.parent_fd, entry.name, relative, "output", entry.info.st_size)
        except TreeError as exc:
            self.log.error(f"no output published: {exc}")

    def publish_log(self, folder: str, name: str, kind: str) -> None:
        shown = f"logs/{name}"
        try:
            folder_fd = os.open(self.data / folder, DIR_FLAGS)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.skip(f"skipped {shown}: its folder cannot be read ({exc.strerror})")
            return
        try:
            try:
                mode = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if not stat.S_ISREG(mode.st_mode):
                self.skip(f"skipped {describe(mode.st_mode)} {shown}: only regular files are published")
                return
            self.store(folder_fd, name.encode(), name, kind, mode.st_size)
        finally:
            os.close(folder_fd)

    def store(self, parent_fd: int, name: bytes, filename: str, kind: str, size_seen: int) -> None:
        """Open ``name`` (see :func:`open_source`), check its size against the budget and store it; a file
        refused along the way gets its line. Only a transient or a store-wide failure is raised."""
        stored_as = f"{OUTPUTS if kind == 'output' else 'logs'}/{filename}"
        shown = safe_name(stored_as)
        budgeted = kind not in TRUSTED_KINDS
        if budgeted and self.left is not None and size_seen > self.left:
            self.skip(f"skipped {shown}: {self._over(size_seen)}")
            return
        try:
            fd = open_source(parent_fd, name)
        except ItemRefusedError as exc:
            self.skip(f"skipped {shown}: {exc}")
            return
        try:
            size = os.fstat(fd).st_size  # what is copied: at most this many bytes
            if budgeted and self.left is not None and size > self.left:
                self.skip(f"skipped {shown}: {self._over(size)}")
                return
            source = Source(fd, size)
            try:
                put = functools.partial(self.target.put, source, stored_as)
                location, stored = retrying(put, TransientPublishError, self.log, shown)
            except ItemRefusedError as exc:
                self.skip(f"{exc}: skipped, publishing goes on")
                return
        finally:
            os.close(fd)
        if budgeted and self.left is not None:
            self.left -= stored
        self.listed += 1
        if self.listed <= LINE_CAP:
            self.log.info(f"  {kind} {safe_name(filename)}: {human_bytes(stored)}")
        elif self.listed == LINE_CAP + 1:
            self.log.info(f"more than {LINE_CAP} files published: the result list names the others")
        self.results.append({"filename": filename, "filesize": stored, "type": kind, **location})

    def _over(self, size: int) -> str:
        return f"{human_bytes(size)}, over the bytes left for results ({human_bytes(self.left or 0)})"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


@functools.cache  # one per process: the warm step runner's children reuse the one it built
def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steps.publish", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--target", required=True, help="this job's results: a folder, s3://<bucket>/<prefix> or ipfs")
    parser.add_argument("--max-files", type=int, default=10_000)
    parser.add_argument("--max-bytes", type=_not_negative, default=None, help="bytes of results (default: no cap)")
    parser.add_argument("--max-depth", type=_positive, default=DEFAULT_MAX_DEPTH, help="folder levels published")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    log = setup_logging("c2d.publish", args.data / ADMINLOGS / "publish.log")
    try:
        target = open_target(args.target)
        publisher = Publisher(
            args.data, target, log, max_files=args.max_files, max_depth=args.max_depth, max_bytes=args.max_bytes
        )
        return publisher.run()
    except StepError as exc:
        log.error(f"publishing failed: {exc}")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
