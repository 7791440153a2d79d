"""Provider tests: the FastAPI app over the session stack, with the local engine running jobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from provider.app import create_app
from tests.fileserver import FileServer
from tests.workflows.conftest import engine, jobs  # noqa: F401 (fixtures)
from workflows.local.engine import LocalEngine

from .market import Market, open_market


@pytest.fixture
def client(stack: Stack, pool: Pool, engine: LocalEngine) -> Iterator[TestClient]:  # noqa: F811
    with TestClient(create_app(stack.settings, pool, engine)) as test_client:
        yield test_client


@pytest.fixture
def market(
    client: TestClient,
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    provider_account: LocalAccount,
    pool: Pool,
    file_server: FileServer,
) -> Market:
    return open_market(client, chain, addresses, publisher, provider_account, pool, file_server)
