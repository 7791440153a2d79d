"""Operator metrics (Prometheus, ``prometheus_client``): what every process exposes, and how (docs/metrics.md).

* :class:`JobCountsCollector`: ``c2d_jobs``, ``c2d_queue_depth`` and ``c2d_database_up``, read from Postgres at
  scrape time and reused for ``cache_seconds`` (a scrape storm costs one query). Database-wide figures: every
  process that exports them reports the same numbers.
* :func:`process_registry`: the process's own CPU, memory, file descriptors and garbage collector.
* :class:`Exposition`: what one endpoint serves, several registries in one.
* :class:`MetricsServer`: a port of its own serving an exposition (``c2d engine``, or the provider when its
  metrics stay off the API port), closed cleanly.

Every component keeps its metrics in a registry of its own, never in the library's global one: tests run several
apps and engines in one process, and each counts what it did only. No label holds a secret, a DID, an address or
a URL; every label takes its values from a small fixed set or from the configuration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Self

import psycopg
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.gc_collector import GCCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from c2d.db.job_counts import JobCounts, count_jobs
from c2d.db.pool import Pool
from c2d.exceptions import PortInUseError
from c2d.status import JobStatus

log = logging.getLogger(__name__)


def status_text(code: int) -> str:
    """The Ocean text of a status code, as a label value (no trailing space; ``unknown`` for a foreign code)."""
    try:
        return JobStatus(code).text.strip()
    except ValueError:
        return "unknown"


class JobCountsCollector:
    """``c2d_jobs{environment, status, status_text}``, ``c2d_queue_depth{engine, environment}`` and
    ``c2d_database_up``, computed when scraped (:func:`c2d.db.job_counts.count_jobs`).

    Every configured environment (and, for the queue, every engine in ``engines``) has a series for every status,
    zero when no job has it, so series do not come and go; environments no longer configured still show the jobs
    the database holds for them. Concurrent scrapes share one query. When Postgres cannot be read, the two
    families are left out and ``c2d_database_up`` is 0 (the failure is reused for ``cache_seconds`` too)."""

    def __init__(
        self,
        pool: Pool,
        environments: Sequence[str],
        engines: Sequence[str],
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.environments = tuple(environments)
        self.engines = tuple(engines)
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.lock = threading.Lock()
        self.read_at: float | None = None
        self.cached: JobCounts | None = None

    def counts(self) -> JobCounts | None:
        """The counts, at most ``cache_seconds`` old; None when the database could not be read."""
        with self.lock:
            now = self.clock()
            if self.read_at is not None and now - self.read_at < self.cache_seconds:
                return self.cached
            try:
                self.cached = count_jobs(self.pool)
            except psycopg.OperationalError as exc:  # the database is away: the scrape says so, and goes on
                log.warning("metrics: the job counts cannot be read (%s)", exc)
                self.cached = None
            self.read_at = now
            return self.cached

    def describe(self) -> list[Metric]:
        return list(self._families(None, describe=True))

    def collect(self) -> Iterator[Metric]:
        return self._families(self.counts())

    def _families(self, counts: JobCounts | None, describe: bool = False) -> Iterator[Metric]:
        up = GaugeMetricFamily("c2d_database_up", "1 when the job counts could be read from Postgres at this scrape")
        if not describe:
            up.add_metric([], 1 if counts is not None else 0)
        yield up
        if counts is None and not describe:
            return
        jobs = GaugeMetricFamily(
            "c2d_jobs",
            "Jobs in the database by compute environment and Ocean status, finished ones included "
            "(database-wide: aggregate with max, not sum)",
            labels=["environment", "status", "status_text"],
        )
        queue = GaugeMetricFamily(
            "c2d_queue_depth",
            "Jobs waiting for their engine: queued, or claimed but not yet accepted by the cluster (database-wide)",
            labels=["engine", "environment"],
        )
        if counts is not None:
            by_status = {(env, int(code)): 0 for env in self.environments for code in JobStatus}
            by_status.update(counts.by_status)
            for (env, code), count in sorted(by_status.items()):
                jobs.add_metric([env, str(code), status_text(code)], count)
            waiting = {(engine, env): 0 for engine in self.engines for env in self.environments}
            waiting.update(counts.waiting)
            for (engine, env), count in sorted(waiting.items()):
                queue.add_metric([engine, env], count)
        yield jobs
        yield queue


def process_registry() -> CollectorRegistry:
    """A registry of the process's own figures (``process_*``: CPU, memory, descriptors; ``python_*``: garbage
    collector, version). One per exposition: each endpoint shows its process once."""
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class Exposition:
    """What one endpoint serves: the metrics of several collectors (registries), in order. Their metric names
    must not overlap (each component registers its own names only)."""

    def __init__(self, *collectors: Collector) -> None:
        self.collectors = collectors

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()

    def render(self) -> bytes:
        """The Prometheus text format (``prometheus_client.CONTENT_TYPE_LATEST``)."""
        return generate_latest(self)


class MetricsServer:
    """Serves an exposition on ``host:port`` (any path; ``/metrics`` by convention) from a thread of its own,
    until :meth:`close`. ``setting``: the variable that chooses the port, named when it is taken."""

    def __init__(self, exposition: Collector, host: str, port: int, setting: str) -> None:
        try:
            self.server, self.thread = start_http_server(port, host, registry=exposition)
        except OSError as exc:
            raise PortInUseError(
                f"metrics cannot be served on {host}:{port} ({exc.strerror or exc}); choose another port with "
                f"{setting}=<port>"
            ) from None
        self.thread.name = "c2d-metrics"
        self.port = int(self.server.server_port)

    def close(self) -> None:
        """Stop serving and free the port (a scrape in progress is finished first)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
