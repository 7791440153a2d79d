"""The embedded PostgreSQL server (Debian's ``postgresql`` package), or a check of an external one.

PostgreSQL refuses to run as root. When we are root, the server runs inside a user namespace
(``unshare --map-user``) where our uid is mapped to ``nobody``: no system user is created and the data
folder stays owned by the caller outside. The server listens on ``settings.host`` only, with password
(SCRAM) authentication; the password is generated once and kept in the data dir (mode 0600).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from c2d.exceptions import MissingDependencyError, StackError
from c2d.settings import Settings
from c2d.stack.ports import ensure_port_free
from c2d.stack.procs import ManagedProcess, ProcessSpec, wait_until

_NOBODY = 65534


def find_bin_dir(configured: Path | None) -> Path:
    """Folder holding ``initdb`` and ``postgres``: the configured one, else Debian's newest, else PATH."""
    if configured is not None:
        candidates = [configured]
    else:
        root = Path("/usr/lib/postgresql")
        debian = sorted(root.glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True) if root.is_dir() else []
        on_path = shutil.which("postgres")
        candidates = [*debian, *([Path(on_path).resolve().parent] if on_path else [])]
    for folder in candidates:
        if (folder / "postgres").is_file() and (folder / "initdb").is_file():
            return folder
    where = f"in {configured} (C2D_POSTGRES__BIN_DIR)" if configured else "in /usr/lib/postgresql or on PATH"
    raise MissingDependencyError(
        f"PostgreSQL server binaries (initdb, postgres) not found {where}; "
        "run `make setup` (installs Debian's postgresql) or set C2D_POSTGRES__BIN_DIR"
    )


def _user_namespace_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        raise MissingDependencyError("`unshare` (util-linux) is needed to run PostgreSQL as root")
    return [unshare, f"--map-user={_NOBODY}", f"--map-group={_NOBODY}"]


def _password_file(settings: Settings) -> Path:
    return settings.data_dir / "postgres.password"


def embedded_dsn(settings: Settings) -> str:
    """DSN of the embedded server, including its generated password."""
    password = _password_file(settings).read_text().strip()
    return f"{settings.postgres_dsn} password={password}"


def database_dsn(settings: Settings) -> str:
    """DSN every component uses: the external one when configured, else the embedded server's."""
    return settings.postgres.dsn if settings.postgres.dsn else embedded_dsn(settings)


class EmbeddedPostgres:
    """initdb on first use, start, create the database, stop with a fast shutdown."""

    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bin_dir = find_bin_dir(settings.postgres.bin_dir)
        self.data = settings.pg_data_dir
        self.socket_dir = settings.run_dir / "pg-socket"
        self.log_file = settings.log_dir / "postgres.log"
        self.proc = ManagedProcess(
            ProcessSpec(
                name=self.name,
                argv=[
                    *_user_namespace_prefix(),
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(settings.postgres.port),
                    "-k",
                    str(self.socket_dir),
                    "-c",
                    f"listen_addresses={settings.host}",
                    "-c",
                    "max_connections=200",
                ],
                log_file=self.log_file,
                stop_signal=signal.SIGINT,  # "fast" shutdown: roll back clients, checkpoint, exit
                stop_timeout=30,
            ),
            settings.run_dir,
        )

    def _initdb(self) -> None:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        pwfile = self.settings.run_dir / "pg-initdb.pw"
        pwfile.parent.mkdir(parents=True, exist_ok=True)
        pwfile.touch(mode=0o600)
        pwfile.write_text(password + "\n")
        try:
            result = subprocess.run(
                [
                    *_user_namespace_prefix(),
                    str(self.bin_dir / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.settings.postgres.user,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(self.data, ignore_errors=True)
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise StackError(f"initdb failed in {self.data}: {last[0]}")
        secret = _password_file(self.settings)
        secret.write_text(password + "\n")
        secret.chmod(0o600)

    def _connect_admin(self) -> psycopg.Connection[tuple[object, ...]]:
        dsn = embedded_dsn(self.settings).replace(f"dbname={self.settings.postgres.database}", "dbname=postgres")
        return psycopg.connect(dsn, autocommit=True, connect_timeout=2)

    def _accepts(self) -> bool:
        try:
            with self._connect_admin():
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> None:
        ensure_port_free(self.settings.host, self.settings.postgres.port, "PostgreSQL", "C2D_POSTGRES__PORT")
        if not (self.data / "PG_VERSION").is_file():
            self._initdb()
        elif not _password_file(self.settings).is_file():
            raise StackError(
                f"{self.data} exists but its password file {_password_file(self.settings)} is missing; "
                f"remove {self.data} to start from an empty database"
            )
        (self.data / "postmaster.pid").unlink(missing_ok=True)  # left by a killed server; port is free
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.proc.start()
        wait_until(self._accepts, self.proc, timeout=60, what="accepting connections")
        with self._connect_admin() as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (self.settings.postgres.database,)
            ).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.settings.postgres.database)))

    def check(self) -> str:
        if not self.proc.alive() and self.proc.pid is not None:
            raise self.proc.fail("is not running")
        try:
            with psycopg.connect(embedded_dsn(self.settings), connect_timeout=2) as conn:
                version = conn.execute("SHOW server_version").fetchone()
        except psycopg.OperationalError as exc:
            raise StackError(f"PostgreSQL on port {self.settings.postgres.port} does not answer: {exc}") from exc
        return f"PostgreSQL {version[0] if version else '?'} on {self.settings.host}:{self.settings.postgres.port}"

    def stop(self) -> None:
        self.proc.stop()


class ExternalPostgres:
    """A server we do not own: only checked."""

    name = "postgres"

    def __init__(self, settings: Settings) -> None:
        assert settings.postgres.dsn is not None
        self.dsn = settings.postgres.dsn

    def start(self) -> None:
        self.check()

    def check(self) -> str:
        try:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                version = conn.execute("SHOW server_version").fetchone()
        except psycopg.OperationalError as exc:
            raise StackError(f"external PostgreSQL (C2D_POSTGRES__DSN) does not answer: {exc}") from exc
        return f"external PostgreSQL {version[0] if version else '?'}"

    def stop(self) -> None:
        return None
