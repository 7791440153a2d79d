"""Follow a step's growing log file while the step runs: the local engine's :class:`~workflows.livelogs.LogStream`."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from workflows.exceptions import EngineError
from workflows.livelogs import CHUNK_BYTES


class FileFollow:
    """The bytes of ``path`` from its start, as they are appended, until ``running()`` turns false; then what
    is left, then the end.

    ``running`` must turn false only once nothing writes the file any more (the local engine's step phase
    leaves ``Running`` after its sandbox was killed and waited for), so the bytes read after it did are the
    last. The file may not exist yet (the step's sandbox opens it as it starts): it is opened at the first read
    that finds it. It is opened without following a symbolic link, and each read returns at most
    :data:`~workflows.livelogs.CHUNK_BYTES`, so a stream never holds more than that in memory.
    """

    def __init__(self, path: Path, running: Callable[[], bool]) -> None:
        self.path = path
        self.running = running
        self._fd: int | None = None
        self._done = False
        self._lock = threading.Lock()  # read and close may come from different threads

    def read(self) -> bytes | None:
        with self._lock:
            if self._done:
                return None
            running = self.running()  # asked before reading: what it wrote before it ended is read below
            chunk = self._read()
            if chunk:
                return chunk
            if not running:
                self._close()
                return None
            return b""

    def _read(self) -> bytes:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return b""
            except OSError as exc:
                raise EngineError(f"the algorithm's log cannot be opened ({exc.strerror})") from None
        try:
            return os.read(self._fd, CHUNK_BYTES)
        except OSError as exc:
            raise EngineError(f"the algorithm's log cannot be read ({exc.strerror})") from None

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        self._done = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # a stream its reader dropped without closing it keeps no descriptor
        if self._fd is not None:
            os.close(self._fd)
