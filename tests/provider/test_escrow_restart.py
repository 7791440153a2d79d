"""No consumer's funds stay locked by the node: a paid job's lock is settled by the next node to start, when the
node that locked it stopped before its settlement ran."""

from __future__ import annotations

import time

import httpx
from eth_account.signers.local import LocalAccount

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.chain.escrow import Escrow
from c2d.db.escrow_locks import EscrowLockStore
from c2d.db.jobs import JobStore
from c2d.db.pool import Pool
from c2d.stack.stack import Stack
from node.wiring import Node
from tests.c2d.escrow_parties import OCEAN
from tests.fileserver import FileServer

from .market import open_market
from .ocean_node_requests import ALGORITHM, DATA, escrow_consumer, paid_start, trusting


def test_a_lock_left_by_a_stopped_node_is_settled_by_the_next_one(
    stack: Stack,
    pool: Pool,
    chain: Chain,
    addresses: OceanAddresses,
    publisher: LocalAccount,
    provider_account: LocalAccount,
    file_server: FileServer,
) -> None:
    provider = stack.settings.provider.model_copy(update={"escrow_settle_seconds": 3600})  # one round, at start
    settings = stack.settings.model_copy(update={"provider": provider})
    escrow = Escrow(chain, str(addresses.escrow))
    jobs = JobStore(pool)
    with Node(settings), httpx.Client(base_url=settings.provider_url, timeout=30) as client:
        market = open_market(client, chain, addresses, publisher, provider_account, pool, file_server)
        consumer = escrow_consumer(market, stack, provider_account, 20 * OCEAN)
        algorithm = market.publish("algorithm", ALGORITHM)
        dataset = market.publish("dataset", DATA, **trusting(algorithm))
        response = client.post("/api/services/compute", json=paid_start(market, consumer, dataset, algorithm))
        assert response.status_code == 200, response.text
        job_id = response.json()[0]["jobId"]
        end = time.monotonic() + 60
        while not (job := jobs.get(job_id)) or not job.finished:
            assert time.monotonic() < end, f"job {job_id} did not finish"
            time.sleep(0.1)
        assert job.status == 70
    # the node stopped with the job finished and its lock unsettled
    assert escrow.user_funds(consumer.address, addresses.ocean).locked == int(2.5 * OCEAN)
    row = EscrowLockStore(pool).get(job_id)
    assert row is not None and row.state == "locked"

    with Node(settings):  # a new node settles at start
        end = time.monotonic() + 30
        while (row := EscrowLockStore(pool).get(job_id)) is not None and row.state == "locked":
            assert time.monotonic() < end, "the restarted node did not settle the lock"
            time.sleep(0.2)
    assert row is not None and row.state == "claimed" and row.cost_wei == int(1.25 * OCEAN)
    funds = escrow.user_funds(consumer.address, addresses.ocean)
    assert funds.locked == 0 and funds.available == 20 * OCEAN - int(1.25 * OCEAN)
    job = jobs.get(job_id)
    assert job is not None and job.details["compute"]["payment"]["claimTx"] == row.claim_tx
