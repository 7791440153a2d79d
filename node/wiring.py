"""The running node, wired once: provider API + indexer + engine over one pool (``c2d provider``, ``c2d demo``)."""

from __future__ import annotations

import signal
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

import uvicorn

from c2d.db.pool import Pool, open_pool
from c2d.exceptions import StackError, StorageError
from c2d.metrics import MetricsServer
from c2d.settings import Settings
from c2d.stack.postgres import database_dsn
from provider.app import create_app, serve_app
from provider.escrow_settler import EscrowSettler
from provider.indexer.indexer import Indexer
from provider.metrics import ProviderMetrics
from provider.result_assets import ResultAssets
from provider.retention import Retention
from provider.services import Services
from workflows.local.engine import LocalEngine

if TYPE_CHECKING:
    from workflows.argo.livelog import PodLogs


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.dsn = database_dsn(settings)
        self.pool: Pool = open_pool(self.dsn, max_size=settings.postgres.pool_size)
        self.engine = LocalEngine(settings, self.pool, self.dsn) if settings.engine.kind == "local" else None
        # the running algorithms' output: the local engine's files, or the argo jobs' pods (read by this process)
        self.pod_logs: PodLogs | None = None
        if settings.engine.kind == "argo":
            from workflows.argo.livelog import PodLogs  # the Kubernetes client only where it is used

            self.pod_logs = PodLogs(settings)
        app = create_app(settings, self.pool, self.engine, self.engine or self.pod_logs)
        services: Services = app.state.services  # the chain, the provider account and the stores, built once
        self.indexer = Indexer(services.chain, services.ddos, services.account)
        self.metrics: ProviderMetrics | None = app.state.metrics
        self.metrics_server: MetricsServer | None = None
        self.results = services.results
        self.retention = Retention(services.jobs, services.results, settings.storage.cleanup_seconds)
        self.result_assets = ResultAssets(services)
        interval = settings.provider.escrow_settle_seconds
        self.settler = EscrowSettler(services.payments, services.jobs, services.statuses, interval)
        config = uvicorn.Config(
            serve_app(app),
            host=settings.host,
            port=settings.provider.port,
            log_level="warning",
            proxy_headers=False,
            timeout_keep_alive=settings.provider.keep_alive_seconds,
        )
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    def start_workers(self) -> None:
        try:
            self.results.prepare()
        except StorageError as exc:
            self.pool.close()
            raise StackError(f"the results storage is not usable: {exc}") from None
        port = self.settings.metrics.provider_port
        if self.metrics is not None and port is not None:  # metrics off the API port
            try:
                self.metrics_server = MetricsServer(
                    self.metrics.exposition, self.settings.host, port, "C2D_METRICS__PROVIDER_PORT"
                )
            except StackError:
                self.pool.close()
                raise
        self.indexer.start()
        self.retention.start()
        self.result_assets.start()
        self.settler.start()
        if self.engine is not None:
            self.engine.start()

    def serve_forever(self) -> None:
        """Foreground: until Ctrl-C / SIGTERM (uvicorn handles the signals), then everything closed."""
        # Once it has stopped, uvicorn raises the signal it caught again, for the handler it found: with the
        # default one a SIGTERM killed the process before close(), and the engine left its mounts (job disks,
        # binds) behind. A no-op here: run() returns, and the node closes.
        signal.signal(signal.SIGTERM, lambda *_: None)
        self.start_workers()
        try:
            self.server.run()
        finally:
            self.close()

    def __enter__(self) -> Node:
        """Background: the API in a thread, ready when this returns."""
        self.start_workers()
        self.thread = threading.Thread(target=self.server.run, name="c2d-provider", daemon=True)
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > end:
                self.close()
                raise StackError(f"the provider API did not start on {self.settings.provider_url}")
            time.sleep(0.05)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        if self.engine is not None and self.engine.dispatcher is not None:
            self.engine.close()
        if self.pod_logs is not None:
            self.pod_logs.close()
        self.indexer.stop()
        self.retention.stop()
        self.result_assets.stop()
        self.settler.stop()
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None
        self.pool.close()
