"""Live logs: what the provider reads of a running algorithm's output (``computeStreamableLogs``).

Each engine follows the log its own way (the local engine tails the step's log file, the argo engine follows
the algorithm pod's log); the provider sees only these two protocols, so it never imports an engine.
"""

from __future__ import annotations

from typing import Protocol

from c2d.db.job_records import JobRecord

CHUNK_BYTES = 64 * 1024  # the most one read returns: what one stream holds in memory at a time


class LogStream(Protocol):
    """An open follow of one job's algorithm output, from its first byte.

    :meth:`read` never blocks for long (a file read, or a queue look-up): the caller waits between reads
    that return ``b""``. :meth:`close` may be called at any time, from any thread, more than once; it
    releases the file or connection (and any thread) the stream holds.
    """

    def read(self) -> bytes | None:
        """The next bytes of the log (at most :data:`CHUNK_BYTES`); ``b""`` when none are there yet; None once
        the algorithm has ended and every byte it wrote was returned (or once the stream is closed)."""
        ...

    def close(self) -> None: ...


class LiveLogs(Protocol):
    """What follows the algorithm's output of a job the engine runs."""

    def algorithm_log(self, job: JobRecord) -> LogStream | None:
        """A stream of ``job``'s algorithm output while its algorithm runs; None when the job is not running
        its algorithm here (not started, another step, finished, another engine's job).
        :class:`~workflows.exceptions.EngineError` when the engine cannot tell now (its API unreachable)."""
        ...
