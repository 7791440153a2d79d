"""The provider's metrics (docs/metrics.md): its HTTP requests, the job counts, and the embedded engine's.

* :class:`ProviderMetrics`: a registry per app (tests run several apps in one process) with
  ``c2d_http_requests_total{method, route, status}`` and ``c2d_http_request_duration_seconds{method, route}``,
  the job counts (:class:`c2d.metrics.JobCountsCollector`) and the process's figures; its exposition adds the
  registry of the engine the app embeds.
* :class:`HttpMetrics`: a plain ASGI middleware that counts every request, the status endpoint's fast path
  included (it wraps it). The route label is the route's template (``/api/aquarius/assets/ddo/{did}``), never the
  raw path; a request no route matches is ``<unmatched>``, a method outside the standard ones ``OTHER``.
  Its figures are plain numbers in :class:`RequestStats` (no lock, no ``prometheus_client`` call per request:
  ~1 µs a request instead of ~2.5; docs/metrics.md), turned into metrics when scraped.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from c2d.db.pool import Pool
from c2d.metrics import Exposition, JobCountsCollector, process_registry
from c2d.settings import Settings

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
UNMATCHED = "<unmatched>"


class _Durations:
    """One (method, route)'s request durations: a count per bucket (not cumulative; the last: above every
    bound) and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.total = 0.0


class RequestStats:
    """``c2d_http_requests_total{method, route, status}`` and ``c2d_http_request_duration_seconds{method, route}``
    as plain numbers, turned into metrics when scraped.

    :meth:`record` is called from the server's event loop only (one thread: no lock needed); :meth:`collect` runs
    in any thread and reads copies (a dict copy is atomic under the GIL). A histogram's count is the sum of its
    buckets, so the two always agree."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], int] = {}
        self.durations: dict[tuple[str, str], _Durations] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        self.requests[key] = self.requests.get(key, 0) + 1
        durations = self.durations.get((method, route))
        if durations is None:
            durations = self.durations[(method, route)] = _Durations()
        durations.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        durations.total += seconds

    def describe(self) -> list[Metric]:
        return list(self._families({}, {}))

    def collect(self) -> Iterator[Metric]:
        return self._families(dict(self.requests), dict(self.durations))

    @staticmethod
    def _families(
        requests: dict[tuple[str, str, int], int], durations: dict[tuple[str, str], _Durations]
    ) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            "c2d_http_requests",
            "HTTP requests answered by the provider, by method, route template and status code",
            labels=["method", "route", "status"],
        )
        for (method, route, status), count in sorted(requests.items()):
            counter.add_metric([method, route, str(status)], count)
        yield counter
        histogram = HistogramMetricFamily(
            "c2d_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response, by method and route template",
            labels=["method", "route"],
        )
        bounds = [*(repr(float(bound)) for bound in LATENCY_BUCKETS), "+Inf"]  # "0.0005", "1.0": as the library
        for (method, route), series in sorted(durations.items()):
            total = series.total
            cumulative = list(accumulate(list(series.counts)))
            histogram.add_metric([method, route], list(zip(bounds, cumulative, strict=True)), total)
        yield histogram


class ProviderMetrics:
    """One app's metrics. ``engine_registry``: the embedded engine's, served with them."""

    def __init__(self, settings: Settings, pool: Pool, engine_registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = RequestStats()
        self.registry.register(self.http)
        self.registry.register(
            JobCountsCollector(
                pool,
                [env.id for env in settings.environments],
                [settings.engine.kind],
                settings.metrics.cache_seconds,
            )
        )
        parts: list[Collector] = [self.registry, process_registry()]
        if engine_registry is not None:
            parts.append(engine_registry)
        self.exposition = Exposition(*parts)


class HttpMetrics:
    """Counts and times every HTTP request of ``app``. The route is the one FastAPI's routing matched
    (``scope["route"]``); ``unrouted``: paths answered before routing (the status fast path's), their own label."""

    def __init__(self, app: ASGIApp, metrics: ProviderMetrics, unrouted: Iterable[str] = ()) -> None:
        self.app = app
        self.stats = metrics.http
        self.unrouted = frozenset(unrouted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500  # an exception before the response starts: the server answers 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - began
            template = getattr(scope.get("route"), "path", None)
            if not isinstance(template, str):
                template = scope["path"] if scope["path"] in self.unrouted else UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            self.stats.record(method, template, status, seconds)
