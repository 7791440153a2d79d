"""A piece of work the node repeats in the background (results retention, result assets)."""

from __future__ import annotations

import logging
import threading

import psycopg

log = logging.getLogger(__name__)


class Periodic:
    """Calls :meth:`run_once` every ``interval`` seconds on its own thread until :meth:`stop`; a database
    that is away is waited for (logged, tried again at the next round), anything else is a bug and ends
    the thread loudly."""

    name = "periodic"
    done_message = "%d item(s) done"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def run_once(self) -> int:
        """One round; how many items it handled."""
        raise NotImplementedError

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name=f"c2d-{self.name}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                count = self.run_once()
            except psycopg.OperationalError as exc:  # the database is away: the next round tries again
                log.warning("%s: %s", self.name, exc)
                count = 0
            if count:
                log.info(f"{self.name}: {self.done_message}", count)
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
