"""The engines' metrics (docs/metrics.md): step durations and errors of an engine, and the Argo watcher's.

Each engine instance has a registry of its own (:attr:`EngineMetrics.registry`); the provider's ``/metrics``
includes the registry of the engine it embeds, ``c2d engine`` serves it on ``C2D_METRICS__ENGINE_PORT``. Label
values come from small fixed sets (engines, outcomes, error kinds, change kinds, watch event types) or from the
configured pipelines (step templates): never a job id, DID, address or URL.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# From a warm step's ~10 ms to a day-long algorithm.
STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
# Cluster timestamps have whole seconds: the buckets below 1 s tell how often the mirror is within a second.
LAG_BUCKETS = (0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300, 1800)
HANDLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)

STEP_OUTCOMES = frozenset({"Succeeded", "Failed", "Error"})  # Argo node phases of a step that ran

# c2d_engine_errors_total{kind}: each engine's kinds start at 0 (a series that exists before its first error)
LOCAL_ERRORS = ("database", "job_setup", "unsupported_workflow", "internal")
ARGO_ERRORS = (
    "dispatch",
    "submit_invalid",
    "submit_refused",
    "submit_transient",
    "watch",
    "release",
    "terminate",
    "node_check",
)

# c2d_watcher_mirror_lag_seconds{change}
STEP_STARTED = "step_started"
STEP_FINISHED = "step_finished"
WORKFLOW_FINISHED = "workflow_finished"
WATCH_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"})


class EngineMetrics:
    """``c2d_step_duration_seconds{engine, step, outcome}`` and ``c2d_engine_errors_total{engine, kind}`` of one
    engine (``engine``: ``local`` or ``argo``; ``error_kinds``: the kinds it reports)."""

    def __init__(self, engine: str, error_kinds: Sequence[str]) -> None:
        self.engine = engine
        self.registry = CollectorRegistry(auto_describe=True)
        self.step_duration = Histogram(
            "c2d_step_duration_seconds",
            "Wall time of a pipeline step that ran, from its start to its end, retries included, by step template "
            "and outcome (Argo node phase)",
            ["engine", "step", "outcome"],
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "c2d_engine_errors",
            "Errors of the engine by kind (docs/metrics.md): database outages, jobs that could not be set up or "
            "submitted, watch failures",
            ["engine", "kind"],
            registry=self.registry,
        )
        self.error_kinds = frozenset(error_kinds)
        for kind in error_kinds:
            self.errors.labels(engine, kind)

    def step_finished(self, step: str, outcome: str, seconds: float) -> None:
        """A step (its template's name) ended with ``outcome`` after ``seconds``; other outcomes are not steps
        that ran (Omitted, Skipped) and are not observed."""
        if outcome in STEP_OUTCOMES:
            self.step_duration.labels(self.engine, step, outcome).observe(max(seconds, 0.0))

    def error(self, kind: str) -> None:
        """Count an error of one of the engine's ``error_kinds`` (ValueError for another: a bug)."""
        if kind not in self.error_kinds:
            raise ValueError(f"unknown error kind {kind!r} for the {self.engine} engine")
        self.errors.labels(self.engine, kind).inc()


class WatcherMetrics:
    """The Argo watcher's metrics, in its engine's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "c2d_watcher_events", "Workflow watch events received, by type", ["type"], registry=registry
        )
        for kind in sorted(WATCH_EVENT_TYPES):
            self.events.labels(kind)
        self.resyncs = Counter(
            "c2d_watcher_resyncs", "Lists of every job Workflow (at start, after a 410 or an error)", registry=registry
        )
        self.gone = Counter(
            "c2d_watcher_gone",
            "Watches ended by 410 Gone (resourceVersion expired): a new list follows",
            registry=registry,
        )
        self.mirror_lag = Histogram(
            "c2d_watcher_mirror_lag_seconds",
            "From a change on the cluster (a node's startedAt or finishedAt, the Workflow's finishedAt: whole "
            "seconds, so up to 1 s too long) to its commit in Postgres",
            ["change"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        for change in (STEP_STARTED, STEP_FINISHED, WORKFLOW_FINISHED):
            self.mirror_lag.labels(change)
        self.handle_seconds = Histogram(
            "c2d_watcher_handle_seconds",
            "Time the watcher takes to mirror one Workflow (event or list item) into Postgres",
            buckets=HANDLE_BUCKETS,
            registry=registry,
        )
        self.releases_waiting = Gauge(
            "c2d_watcher_releases_waiting",
            "Workflows of finished jobs whose finalizer and fetch Secret the watcher has yet to remove",
            registry=registry,
        )

    def event(self, kind: object) -> None:
        self.events.labels(kind if isinstance(kind, str) and kind in WATCH_EVENT_TYPES else "other").inc()

    def lag(self, change: str, seconds: float) -> None:
        self.mirror_lag.labels(change).observe(max(seconds, 0.0))
