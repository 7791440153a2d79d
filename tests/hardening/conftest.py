"""Fault and load tests kill or flood parts of the node: they get a stack of their own, never the session's."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from c2d.db.jobs import JobStore
from c2d.db.pool import Pool, open_pool
from c2d.stack.postgres import EmbeddedPostgres, database_dsn
from c2d.stack.stack import Stack
from tests.conftest import make_settings
from tests.fileserver import FileServer
from tests.workflows.conftest import Jobs, engine, jobs  # noqa: F401 (the engine fixtures, for these tests too)


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory: pytest.TempPathFactory, file_server: FileServer) -> Iterator[Stack]:
    with Stack(make_settings(tmp_path_factory.mktemp("faults"), [file_server.host])) as stack:
        yield stack


@pytest.fixture(scope="session")
def fault_pool(fault_stack: Stack) -> Iterator[Pool]:
    pool = open_pool(database_dsn(fault_stack.settings), max_size=4)
    yield pool
    pool.close()


@pytest.fixture
def fault_jobs(fault_stack: Stack, fault_pool: Pool) -> Jobs:
    return Jobs(fault_stack.settings, JobStore(fault_pool), None)


def postgres_of(stack: Stack) -> EmbeddedPostgres:
    server = stack.components[0]
    assert isinstance(server, EmbeddedPostgres)
    return server


def kill_postgres(stack: Stack) -> None:
    """kill -9 of the server and every backend (its process group), as a crash would."""
    pid = postgres_of(stack).proc.pid
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
