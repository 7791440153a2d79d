"""Job statuses kept in memory for the status endpoint, refreshed the moment Postgres says they changed.

Postgres stays the source of truth: every insert or update of a job is announced on the channel
``c2d_jobs`` (migration 0004: a trigger, delivered after commit, payload "<owner> <job id>"). A
listener thread re-reads that one job and replaces it in its owner's entry, so an owner whose jobs
are running stays cached instead of being read again at every poll. While the listener is not
connected (at start, after a lost connection) nothing is served from memory. At most ``MAX_OWNERS``
owners are kept (the first filled go first), so unknown addresses cannot grow it.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import psycopg
from psycopg.rows import class_row

from c2d.db.jobs import JOB_COLUMNS, JobRecord
from provider.status_object import status_object

log = logging.getLogger(__name__)
CHANNEL = "c2d_jobs"
MAX_OWNERS = 10_000
Cached = tuple[JobRecord, bytes, bytes]  # a job, its status object as JSON for an unsigned and a signed request
Entry = tuple[Cached, ...]  # an owner's jobs, oldest first


def status_json(record: JobRecord, *, signed: bool) -> bytes:
    """A job's status object serialised as FastAPI's JSONResponse writes it."""
    wire = status_object(record, signed=signed).wire()
    return json.dumps(wire, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def cached(record: JobRecord) -> Cached:
    """What the cache keeps of a job: both answers (one object when they are the same: most jobs)."""
    unsigned = status_json(record, signed=False)
    signed = status_json(record, signed=True)
    return record, unsigned, unsigned if signed == unsigned else signed


class StatusCache:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        # Read without a lock by the event loop (a dict read and immutable tuples); writers replace entries
        # under ``lock``. First filled, first evicted.
        self.entries: dict[str, Entry] = {}
        self.filling: dict[str, int] = {}  # owner -> changes announced while its jobs were being read
        self.lock = threading.Lock()
        self.live = threading.Event()  # the listener is connected: entries are current
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def get(self, owner: str) -> Entry | None:
        """The owner's jobs, or None when they are not cached (never blocks: the event loop calls it)."""
        return self.entries.get(owner.lower()) if self.live.is_set() else None

    def begin_fill(self, owner: str) -> None:
        """Call before reading an owner's jobs from Postgres, then :meth:`fill` with what was read."""
        with self.lock:
            self.filling[owner.lower()] = 0

    def fill(self, owner: str, records: list[JobRecord]) -> Entry:
        jobs = tuple(cached(record) for record in records)
        key = owner.lower()
        with self.lock:
            changed = self.filling.pop(key, 1)
            if changed == 0 and self.live.is_set():  # nothing changed while we read: keep it
                self.entries[key] = jobs
                while len(self.entries) > MAX_OWNERS:
                    del self.entries[next(iter(self.entries))]
        return jobs

    def drop(self, owner: str | None = None) -> None:
        with self.lock:
            if owner is None:
                self.entries.clear()
                self.filling = dict.fromkeys(self.filling, 1)
            else:
                self.entries.pop(owner.lower(), None)
                if owner.lower() in self.filling:
                    self.filling[owner.lower()] += 1

    def _changed(self, conn: psycopg.Connection[Any], owner: str, job_id: str) -> None:
        with self.lock:
            if owner in self.filling:
                self.filling[owner] += 1
            held = owner in self.entries
        if not held:
            return
        with conn.cursor(row_factory=class_row(JobRecord)) as cur:
            cur.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = %s".encode(), (job_id,))
            record = cur.fetchone()
        fresh = cached(record) if record is not None else None
        with self.lock:
            entry = self.entries.get(owner)
            if entry is None:
                return
            kept = tuple(job for job in entry if job[0].job_id != job_id)
            if fresh is None:
                self.entries[owner] = kept
            elif len(kept) == len(entry):  # a new job goes last: the newest
                self.entries[owner] = (*entry, fresh)
            else:
                self.entries[owner] = tuple(fresh if job[0].job_id == job_id else job for job in entry)

    # -- the listener -------------------------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self._listen, name="c2d-status-cache", daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.stopping.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn, psycopg.connect(self.dsn) as reader:
                    reader.autocommit = True
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.drop()  # anything read before LISTEN may be stale
                    self.live.set()
                    while not self.stopping.is_set():
                        for notify in conn.notifies(timeout=1.0):
                            owner, _, job_id = notify.payload.partition(" ")
                            self._changed(reader, owner, job_id)
            except psycopg.OperationalError as exc:
                if self.live.is_set():  # once per outage, not once a second
                    log.warning("status cache: %s; serving from Postgres until it is back", exc)
            finally:
                self.live.clear()
                self.drop()
            self.stopping.wait(1.0)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join()
