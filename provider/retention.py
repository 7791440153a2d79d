"""Results retention: a job's results are deleted once its environment's storage expiry has passed.

The expiry of a job is set when it ends (``jobs.expiry``: end + the environment's ``storage_expiry``).
Every ``C2D_STORAGE__CLEANUP_SECONDS`` the sweeper deletes the stored results of expired jobs
(local store, S3 prefix, IPFS pins) and only then marks the job ``removed`` with an audit event; a
store that refuses is tried again at the next sweep, so nothing is marked removed that still exists.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from c2d.db.jobs import JobStore
from c2d.exceptions import StorageError
from provider.results import ResultStore

log = logging.getLogger(__name__)
SOURCE = "retention"
BATCH = 100


class Retention:
    def __init__(self, jobs: JobStore, results: ResultStore, interval: float) -> None:
        self.jobs = jobs
        self.results = results
        self.interval = interval
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def sweep(self) -> int:
        """Delete the results of expired jobs; returns how many jobs were marked removed."""
        removed = 0
        failed: set[str] = set()
        while True:
            batch = [job for job in self.jobs.expired(BATCH + len(failed)) if job.job_id not in failed]
            if not batch:
                return removed
            for job in batch:
                try:
                    self.results.delete(job)
                except StorageError as exc:
                    log.warning("retention: results of job %s not deleted yet: %s", job.job_id, exc)
                    failed.add(job.job_id)
                    continue
                if self.jobs.mark_removed(job.job_id, source=SOURCE, reason="storage expiry passed"):
                    removed += 1

    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="c2d-retention", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                count = self.sweep()
            except psycopg.OperationalError as exc:  # the database is away: the next sweep tries again
                log.warning("retention: %s", exc)
                count = 0
            if count:
                log.info("retention: removed the results of %d expired job(s)", count)
            self.stopping.wait(self.interval)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
