"""``c2d``: start, check and stop the embedded stack, show the configuration, apply migrations."""

from __future__ import annotations

import faulthandler
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel, SecretStr, ValidationError

from c2d.db.pool import Pool, migrate_dsn
from c2d.exceptions import C2DError
from c2d.settings import Settings, load_settings
from c2d.stack import supervisor
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from c2d.metrics import MetricsServer

app = typer.Typer(
    help="Compute-to-Data node: embedded stack and operations.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _echo(message: str) -> None:
    typer.echo(f"[c2d {time.strftime('%H:%M:%S')}] {message}")


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


@app.callback()
def main(
    ctx: typer.Context,
    data_dir: Annotated[
        Path | None, typer.Option(help="Data folder (default: .c2d in the checkout, or ~/.c2d).")
    ] = None,
) -> None:
    """Read the settings once; every command gets them from the context."""
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck node is doing, without stopping it
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        ctx.obj = load_settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _fail(f"invalid setting {where or ''}: {first['msg']}") from None


@app.command()
def up(
    ctx: typer.Context,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background.")] = False,
) -> None:
    """Start the embedded stack (Postgres, anvil + Ocean contracts, results store) and keep it running."""
    settings: Settings = ctx.obj
    try:
        if detach:
            supervisor.spawn_detached(settings, _echo)
            _echo(f"stack running in the background; `c2d down` stops it (logs: {settings.log_dir})")
            return
        code = supervisor.run(settings, _echo, lambda: _echo("stack ready; Ctrl-C stops it"))
    except C2DError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def down(ctx: typer.Context) -> None:
    """Stop a stack started with `c2d up --detach` (and anything a crashed run left behind)."""
    settings: Settings = ctx.obj
    if supervisor.stop(settings, _echo):
        _echo("stack stopped")
    else:
        _echo(f"nothing running for {settings.data_dir}")


@app.command()
def status(ctx: typer.Context) -> None:
    """Check every component of the stack; exit 1 when one is unhealthy."""
    settings: Settings = ctx.obj
    try:
        states = Stack(settings).check()
    except C2DError as exc:
        raise _fail(str(exc)) from None
    for state in states:
        mark = typer.style("ok ", fg=typer.colors.GREEN) if state.healthy else typer.style("BAD", fg="red")
        typer.echo(f"{mark} {state.name:<10} {state.detail}")
    if not all(state.healthy for state in states):
        raise typer.Exit(1)


@app.command()
def check(ctx: typer.Context) -> None:
    """Start the stack, check every component, stop it: a quick check of an installation."""
    settings: Settings = ctx.obj
    try:
        with Stack(settings, _echo) as stack:
            states = stack.check()
            for state in states:
                _echo(f"  {'ok ' if state.healthy else 'BAD'} {state.name:<10} {state.detail}")
    except C2DError as exc:
        raise _fail(str(exc)) from None
    if not all(state.healthy for state in states):
        raise _fail("some components are unhealthy")
    _echo("stack started, checked and stopped cleanly")


def _flatten(model: BaseModel, prefix: str) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        env = f"{prefix}{name.upper()}"
        if isinstance(value, BaseModel):
            rows.extend(_flatten(value, f"{env}__"))
            continue
        shown = "***" if isinstance(value, SecretStr) else ("" if value is None else str(value))
        rows.append((env, shown, info.description or ""))
    return rows


@app.command()
def config(ctx: typer.Context) -> None:
    """Print every setting with its environment variable and current value (secrets masked)."""
    for env, value, description in _flatten(ctx.obj, "C2D_"):
        typer.echo(f"{env:<32} {value:<48} {description}")


@app.command()
def migrate(ctx: typer.Context) -> None:
    """Apply pending database migrations to the configured Postgres (the stack does this at start)."""
    try:
        applied = migrate_dsn(database_dsn(ctx.obj))
    except (C2DError, OSError) as exc:
        raise _fail(str(exc)) from None
    _echo(f"applied migrations {applied}" if applied else "schema is up to date")


@app.command()
def engine(ctx: typer.Context) -> None:
    """Run the configured engine in the foreground (Ctrl-C stops it).

    ``local``: runs queued jobs on this machine. ``argo``: submits them to Argo and mirrors their
    status back (the watcher; the ``c2d-watcher`` Deployment runs this command). Its metrics are served on
    ``C2D_METRICS__ENGINE_PORT`` when set.
    """
    import threading

    from c2d.db.pool import open_pool
    from workflows.argo.engine import ArgoEngine
    from workflows.local.engine import LocalEngine

    settings: Settings = ctx.obj
    done = threading.Event()
    # Ctrl-C stops it however it was started: a shell without job control starts background commands with
    # SIGINT ignored, and Python keeps an ignored SIGINT ignored
    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, lambda *_: done.set())
    kind = settings.engine.kind
    try:
        dsn = database_dsn(settings)
        pool = open_pool(dsn, max_size=settings.postgres.pool_size)
        runner = LocalEngine(settings, pool, dsn) if kind == "local" else ArgoEngine(settings, pool)
        with pool, runner:
            server = _engine_metrics_server(settings, pool, runner.metrics.registry)
            try:
                if kind == "local":
                    _echo(
                        f"local engine running (up to {settings.engine.max_parallel_jobs} jobs at once); "
                        "Ctrl-C stops it"
                    )
                else:
                    _echo(f"argo engine + watcher running on namespace {settings.engine.namespace}; Ctrl-C stops it")
                if server is not None:
                    _echo(f"engine metrics on http://{settings.host}:{server.port}/metrics")
                while not done.wait(1.0) and getattr(runner, "failure", None) is None:
                    pass
            finally:
                if server is not None:
                    server.close()
    except C2DError as exc:
        raise _fail(str(exc)) from None
    failure = getattr(runner, "failure", None)
    if failure is not None:
        raise _fail(f"{kind} engine failed: {failure!r} (see the log above)")
    _echo(f"{kind} engine stopped")


def _engine_metrics_server(settings: Settings, pool: Pool, engine_registry: Collector) -> MetricsServer | None:
    """The engine's metrics, the job counts and the process's figures on ``C2D_METRICS__ENGINE_PORT`` (None when
    it is unset or metrics are disabled)."""
    from c2d.metrics import Exposition, JobCountsCollector, MetricsServer, process_registry

    port = settings.metrics.engine_port
    if not settings.metrics.enabled or port is None:
        return None
    counts = JobCountsCollector(
        pool, [env.id for env in settings.environments], [settings.engine.kind], settings.metrics.cache_seconds
    )
    exposition = Exposition(engine_registry, counts, process_registry())
    return MetricsServer(exposition, settings.host, port, "C2D_METRICS__ENGINE_PORT")


@app.command()
def demo(ctx: typer.Context) -> None:
    """Start the stack, run one real compute job on the local engine, print its result, stop."""
    from node.demo import run_demo

    try:
        run_demo(ctx.obj, _echo)
    except C2DError as exc:
        raise _fail(str(exc)) from None
    _echo("demo finished; the stack is stopped")


@app.command()
def provider(ctx: typer.Context) -> None:
    """Serve the provider API (with the indexer, and the local engine when it is the configured one)."""
    from node.wiring import Node

    settings: Settings = ctx.obj
    try:
        node = Node(settings)
        _echo(f"provider on {settings.provider_url} (API docs: {settings.provider_url}/api/docs); Ctrl-C stops it")
        node.serve_forever()
    except C2DError as exc:
        raise _fail(str(exc)) from None
