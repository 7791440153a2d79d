"""Shared plumbing of the step programs: logging to a result log file, the data layout."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

INPUTS = "inputs"
TRANSFORMATIONS = "transformations"
DDOS = "ddos"
OUTPUTS = "outputs"
LOGS = "logs"  # writable by the algorithm: algorithm.log, filter.log
ADMINLOGS = "adminlogs"  # never mounted into the algorithm: configure.log, publish.log
LAYOUT = (INPUTS, TRANSFORMATIONS, DDOS, OUTPUTS, LOGS, ADMINLOGS)


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
