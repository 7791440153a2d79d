"""The connection pool every component shares (one per process, created by whoever owns the process)."""

from __future__ import annotations

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from c2d.db.migrate import migrate
from c2d.exceptions import DatabaseError

Pool = ConnectionPool[psycopg.Connection[tuple[object, ...]]]


def open_pool(dsn: str, max_size: int = 10, name: str = "c2d") -> Pool:
    """Open a pool of autocommit connections; fail with a clear error when the server is unreachable."""
    pool: Pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True},
        name=name,
        open=False,
        timeout=10,
    )
    try:
        pool.open(wait=True, timeout=10)
    except PoolTimeout as exc:
        pool.close()
        raise DatabaseError(f"cannot connect to PostgreSQL ({_redact(dsn)}) within 10 s") from exc
    return pool


def database_dsn_of(pool: Pool) -> str:
    """The DSN a pool connects with (for the few components that need a connection of their own)."""
    return str(pool.conninfo)


def migrate_dsn(dsn: str) -> list[int]:
    """Apply pending migrations on the database of ``dsn``."""
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            return migrate(conn)
    except psycopg.OperationalError as exc:
        raise DatabaseError(f"cannot connect to PostgreSQL ({_redact(dsn)}): {exc}") from exc


def _redact(dsn: str) -> str:
    return " ".join("password=***" if part.startswith("password=") else part for part in dsn.split())
