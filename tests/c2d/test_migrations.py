"""Versioned migrations against the real Postgres server of the session stack."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from c2d.db.migrate import available, current_version, migrate
from c2d.settings import Settings
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from tests.helpers import race


@pytest.fixture()
def fresh_dsn(stack: Stack, settings: Settings) -> Iterator[str]:
    """A brand-new empty database on the session's server."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = database_dsn(settings).replace(f"dbname={settings.postgres.database}", "dbname=postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield database_dsn(settings).replace(f"dbname={settings.postgres.database}", f"dbname={name}")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_migrations_apply_once_then_are_idempotent(fresh_dsn: str) -> None:
    with psycopg.connect(fresh_dsn, autocommit=True) as conn:
        assert current_version(conn) == 0
        first = migrate(conn)
        second = migrate(conn)
        versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
        tables = {row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert first == [m.version for m in available()]
    assert second == []
    assert versions == first
    assert {"jobs", "job_events", "nonces", "used_orders", "schema_migrations"} <= tables


def test_concurrent_migrators_apply_each_version_exactly_once(fresh_dsn: str) -> None:
    def run() -> list[int]:
        with psycopg.connect(fresh_dsn, autocommit=True) as conn:
            return migrate(conn)

    outcomes = race(3, run)
    assert all(isinstance(o, list) for o in outcomes), outcomes
    applied = sorted(v for result in outcomes if isinstance(result, list) for v in result)
    assert applied == [m.version for m in available()]


def test_the_session_database_is_at_the_newest_version(stack: Stack, settings: Settings) -> None:
    with psycopg.connect(database_dsn(settings)) as conn:
        assert current_version(conn) == len(available())
