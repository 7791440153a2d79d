"""Versioned schema migrations: ``migrations/NNNN_name.sql``, applied in order, each exactly once.

Each file runs in its own transaction together with its row in ``schema_migrations``; a transaction-level
advisory lock serialises concurrent migrators (two provider processes starting at once).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from c2d.exceptions import MigrationError

_LOCK_KEY = 0x0C2D_5C4E  # pg_advisory_xact_lock key reserved for migrations
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Migrations shipped with the package, by version."""
    found: list[Migration] = []
    for entry in resources.files("c2d.db").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration versions must be 1..N without gaps, found {versions}")
    return found


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> list[int]:
    """Apply the missing migrations; return the versions applied now (empty when up to date)."""
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))  # CREATE IF NOT EXISTS races
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    for migration in available():
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            done = conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)).fetchone()
            if done:
                continue
            try:
                conn.execute(migration.sql.encode())
            except psycopg.Error as exc:
                raise MigrationError(f"migration {migration.version:04d}_{migration.name} failed: {exc}") from exc
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied_now.append(migration.version)
    newest = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    known = len(available())
    if newest and newest[0] is not None and int(str(newest[0])) > known:
        raise MigrationError(
            f"database schema is at version {newest[0]} but this code knows only {known}; upgrade the code"
        )
    return applied_now


def current_version(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    row = (
        conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone() if _has_table(conn) else (0,)
    )
    return int(str(row[0])) if row else 0


def _has_table(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    return bool(row and row[0])
