"""Shared plumbing of the step programs: logging to a result log file, the data layout."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from workflows.labels import S3_ACCESS_KEY_ENV, S3_SECRET_KEY_ENV

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
    """A logger writing timestamped lines to stderr and (appending) to ``log_file``."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    return logger


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def walk_entries(folder: Path) -> Iterator[tuple[Path, str, os.stat_result]]:
    """Every entry under ``folder``, sorted, never following a symlink: files, special files and symlinks
    (a symlink to a folder is reported, not entered). Yields (path, relative posix path, lstat)."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = Path(root, name)
            yield path, path.relative_to(folder).as_posix(), os.lstat(path)


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
