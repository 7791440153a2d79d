"""Shared fixtures: one embedded stack (real Postgres, real anvil with the Ocean contracts) per session."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from c2d.chain.artifacts import Artifacts
from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses, read_address_file
from c2d.db.pool import Pool, open_pool
from c2d.environments import ComputeEnvironment, FreeTier, ResourceTerms
from c2d.settings import (
    ANVIL_KEYS,
    ChainSettings,
    FetchSettings,
    PostgresSettings,
    ProviderSettings,
    Settings,
    load_settings,
)
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from tests.fileserver import FileServer, file_server  # noqa: F401 (fixture)
from workflows.local.jobdisk import mounts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


TEST_ENVIRONMENT = ComputeEnvironment(
    cpu=1.0,
    resources={"cpu": ResourceTerms(min=0.5, price=1.0), "ram": ResourceTerms(min=0.5, price=0.5)},
    free=FreeTier(max_job_duration=60, max_jobs=2),
)
"""The default environment, plus what ocean-node's clients use: a free tier, prices (fee tokens per unit-minute)
and resource minimums below the per-job maximum (1 core, 1 GiB, 1 GiB)."""


def make_settings(data_dir: Path, allow_hosts: Sequence[str] = ()) -> Settings:
    """Settings for an isolated stack: own data dir, free ports (never the developer's stack).
    ``allow_hosts``: the loopback servers of the tests that the SSRF guard lets the node fetch from."""
    return load_settings(
        data_dir=data_dir,
        postgres=PostgresSettings(port=free_port()),
        chain=ChainSettings(port=free_port()),
        provider=ProviderSettings(port=free_port()),
        fetch=FetchSettings(allow_hosts=list(allow_hosts)),
        environments=[TEST_ENVIRONMENT],
    )


@pytest.fixture(scope="session", autouse=True)
def no_mount_left(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """What engines killed on purpose (fault tests) leave mounted for their data dirs under this session's
    temporary folder (their jobs folder bound onto itself, its staging binds, job disks) is unmounted at
    the end: the next session's cleanup of old temporary folders never meets a busy mount."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    for entry in sorted(mounts(), key=lambda e: len(e.mount_point), reverse=True):
        if entry.mount_point.startswith(base) or entry.root.startswith(base):
            subprocess.run(["umount", "--lazy", entry.mount_point], capture_output=True, check=False)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory, file_server: FileServer) -> Settings:  # noqa: F811
    return make_settings(tmp_path_factory.mktemp("stack"), [file_server.host])


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Stack]:
    with Stack(settings) as running:
        yield running


@pytest.fixture(scope="session")
def pool(stack: Stack) -> Iterator[Pool]:
    opened = open_pool(database_dsn(stack.settings), max_size=20)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def chain(stack: Stack) -> Chain:
    return Chain(stack.settings.rpc_url, Artifacts(stack.settings.npm_dir))


@pytest.fixture(scope="session")
def addresses(stack: Stack) -> OceanAddresses:
    found = read_address_file(stack.settings.address_file)
    assert found is not None
    return found


@pytest.fixture(scope="session")
def provider_account(settings: Settings) -> LocalAccount:
    account: LocalAccount = Account.from_key(settings.provider.private_key.get_secret_value())
    return account


@pytest.fixture(scope="session")
def publisher() -> LocalAccount:
    account: LocalAccount = Account.from_key(ANVIL_KEYS[2])
    return account


@pytest.fixture(scope="session")
def consumer() -> LocalAccount:
    account: LocalAccount = Account.from_key(ANVIL_KEYS[3])
    return account
