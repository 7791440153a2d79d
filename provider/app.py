"""The FastAPI application: routers, Ocean's error shapes, the services it runs with, its metrics."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp

from c2d.db.pool import Pool
from c2d.settings import Settings
from provider.exceptions import ERROR_RESPONSES, ProviderError, RequestValidationFailed, error_response
from provider.fastpath import PATH as FAST_PATH
from provider.fastpath import StatusFastPath
from provider.metrics import HttpMetrics, ProviderMetrics
from provider.models import OpenApi
from provider.routers import access, aquarius, compute, encrypt, files, logs, nonce, root
from provider.services import Engine, Services
from workflows.livelogs import LiveLogs


def create_app(
    settings: Settings, pool: Pool, engine: Engine | None = None, live_logs: LiveLogs | None = None
) -> FastAPI:
    """The app over an open pool (and the engine jobs are handed to, and what follows their algorithms' output for
    ``computeStreamableLogs``: without it, that endpoint answers 503); the caller owns them. With metrics enabled
    (``C2D_METRICS__ENABLED``), ``app.state.metrics`` holds them (the engine's included), served at
    ``GET /metrics`` unless ``C2D_METRICS__PROVIDER_PORT`` moves them off the API port."""

    services = Services.create(settings, pool, engine, live_logs)
    cache = services.statuses

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        cache.start()
        try:
            yield
        finally:
            cache.stop()

    app = FastAPI(
        title="C2D node provider",
        description="Ocean Provider v2.1 compatible compute-to-data API",
        version="0.1.0",
        docs_url="/api/docs",
        openapi_url="/spec",
        lifespan=lifespan,
    )
    app.state.services = services
    metrics = None
    if settings.metrics.enabled:
        metrics = ProviderMetrics(settings, pool, engine.metrics.registry if engine is not None else None)
    app.state.metrics = metrics
    if metrics is not None and settings.metrics.provider_port is None:
        exposition = metrics.exposition

        # not in the OpenAPI spec: it is the operator's, not part of the Ocean API. A plain function: FastAPI runs
        # it in a worker thread, and the job counts may wait on Postgres.
        @app.get("/metrics", include_in_schema=False)
        def prometheus_metrics() -> Response:
            return Response(exposition.render(), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(ProviderError)
    async def provider_error(_request: Request, exc: ProviderError) -> Response:
        return error_response(exc)

    @app.exception_handler(psycopg.OperationalError)
    async def database_away(_request: Request, _exc: psycopg.OperationalError) -> JSONResponse:
        return JSONResponse({"error": "the node's database is unavailable; try again shortly"}, status_code=503)

    @app.exception_handler(psycopg.DataError)
    async def unstorable_input(_request: Request, _exc: psycopg.DataError) -> JSONResponse:
        return JSONResponse({"error": "the request holds characters the node cannot look up (e.g. NUL)"}, 400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"][1:]) or "request"
            errors.setdefault(field, []).append(error["msg"])
        return await provider_error(_request, RequestValidationFailed(errors))

    for module in (root, nonce, encrypt, files, access, compute, logs, aquarius):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.openapi = lambda: _without_422(app)  # type: ignore[method-assign]
    return app


def _without_422(app: FastAPI) -> OpenApi:
    """The OpenAPI document, less FastAPI's 422 answers: a request that fails validation is answered 400 in
    Ocean's shape (``validation_error`` above), which every operation documents."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


def serve_app(app: FastAPI) -> ASGIApp:
    """What the server runs: the status endpoint's fast path (:mod:`provider.fastpath`) in front of the
    app, outside FastAPI's middleware stack (which costs the hottest endpoint a third of its rate), and,
    with metrics enabled, the request metrics (:class:`provider.metrics.HttpMetrics`) around both."""
    services: Services = app.state.services
    served: ASGIApp = StatusFastPath(app, services, services.statuses)
    metrics: ProviderMetrics | None = app.state.metrics
    if metrics is not None:
        served = HttpMetrics(served, metrics, unrouted=(FAST_PATH,))
    return served
