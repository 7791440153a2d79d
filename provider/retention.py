"""Results retention: a job's results are deleted once its environment's storage expiry has passed.

The expiry of a job is set when it ends (``jobs.expiry``: end + the environment's ``storage_expiry``).
Every ``C2D_STORAGE__CLEANUP_SECONDS`` the sweeper deletes the stored results of expired jobs
(local store, S3 prefix, IPFS pins) and only then marks the job ``removed`` with an audit event; a
store that refuses is tried again at the next sweep, so nothing is marked removed that still exists.
"""

from __future__ import annotations

import logging

from c2d.db.jobs import JobStore
from c2d.exceptions import StorageError
from provider.periodic import Periodic
from provider.results import ResultStore

log = logging.getLogger(__name__)
SOURCE = "retention"
BATCH = 100


class Retention(Periodic):
    name = "retention"
    done_message = "removed the results of %d expired job(s)"

    def __init__(self, jobs: JobStore, results: ResultStore, interval: float) -> None:
        super().__init__(interval)
        self.jobs = jobs
        self.results = results

    def run_once(self) -> int:
        return self.sweep()

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
