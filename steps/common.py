"""Shared plumbing of the step programs: logging to a result log file, the data layout."""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from steps.contract import S3_ACCESS_KEY_ENV, S3_SECRET_KEY_ENV

if TYPE_CHECKING:
    from c2d.storage.s3 import S3Config

INPUTS = "inputs"
TRANSFORMATIONS = "transformations"
DDOS = "ddos"
OUTPUTS = "outputs"
LOGS = "logs"  # writable by the algorithm: algorithm.log, filter.log
ADMINLOGS = "adminlogs"  # never mounted into the algorithm: configure.log, publish.log
LAYOUT = (INPUTS, TRANSFORMATIONS, DDOS, OUTPUTS, LOGS, ADMINLOGS)
ATTEMPTS = 3
T = TypeVar("T")


def setup_logging(name: str, log_file: Path | None) -> logging.Logger:
    """A logger writing timestamped lines to stderr and (appending) to ``log_file``; the handlers of an
    earlier call for the same logger are closed and replaced (a program run twice in one process).

    ``log_file`` is opened without following a symlink and without blocking: a symlink, FIFO or other
    non-regular file planted at its name (the logs folder is writable by the algorithm) is unlinked (a
    folder renamed aside) and a fresh file made in its place."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(log_file, encoding="utf-8", delay=True)  # closes its stream when closed
        to_file.setStream(open_log_file(log_file))
        handlers.append(to_file)
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def open_log_file(path: Path) -> io.TextIOWrapper:
    """``path`` opened for appending text: a regular file, never a symlink's target nor a FIFO."""
    append = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for _ in range(3):
            try:
                fd = os.open(path.name, append | os.O_CREAT, 0o644, dir_fd=folder)
            except OSError as exc:  # ELOOP: a symlink; ENXIO: a FIFO without a reader; EISDIR ...
                if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EOPNOTSUPP, errno.ENODEV):
                    raise
            else:
                if stat.S_ISREG(os.fstat(fd).st_mode):
                    os.set_blocking(fd, True)
                    return open(fd, "a", encoding="utf-8", closefd=True)
                os.close(fd)
            _remove_entry(folder, path.name)
        raise OSError(errno.EEXIST, "the log file keeps being replaced")
    finally:
        os.close(folder)


def _remove_entry(folder: int, name: str) -> None:
    """Unlink ``name`` in the folder open at ``folder``; a folder there is renamed aside (it stays unpublished)."""
    if stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
        os.rename(name, f".{name}.{os.urandom(8).hex()}", src_dir_fd=folder, dst_dir_fd=folder)
    else:
        os.unlink(name, dir_fd=folder)


def safe_name(name: bytes | str, limit: int = 200) -> str:
    """``name`` as it may appear in a log line or an error message: bytes decoded with
    ``errors="backslashreplace"``, every non-printable character (control characters, line and paragraph
    separators, format characters such as bidi overrides) escaped as ``\\xNN``/``\\uNNNN``, so that a name
    can never start a line of its own; cut to ``limit`` characters (``...`` marks the cut)."""
    text = name.decode("utf-8", errors="backslashreplace") if isinstance(name, bytes) else name
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")  # lone surrogates of a str
    shown = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
    return shown if len(shown) <= limit else shown[:limit] + "..."


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def retrying(action: Callable[[], T], transient: type[Exception], log: logging.Logger, label: str) -> T:
    """``action()``, tried up to ``ATTEMPTS`` times while it raises ``transient`` (1 s, 2 s backoff)."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return action()
        except transient as exc:
            if attempt == ATTEMPTS:
                raise
            log.warning(f"  {label}: attempt {attempt} failed: {exc}; retrying")
            time.sleep(2 ** (attempt - 1))
    raise AssertionError("unreachable")


def s3_config(endpoint: str | None, region: str | None) -> S3Config | None:
    """The S3 store at ``endpoint`` with the keys the step got from the storage Secret; None without either."""
    access_key, secret_key = os.environ.get(S3_ACCESS_KEY_ENV), os.environ.get(S3_SECRET_KEY_ENV)
    if not (endpoint and access_key and secret_key):
        return None
    from c2d.storage.s3 import S3Config  # only jobs that use S3 pay for importing the SDK

    return S3Config(endpoint, access_key, secret_key, region or None)
