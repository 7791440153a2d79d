"""ocean-node's protocol (what ocean.js 8.x speaks) next to Provider v2.1's, over the real chain and jobs: the
endpoint map, environments, initializeCompute, free jobs, command signatures, DDO validation, encryption, escrow-paid
jobs, and the queue (jobs that wait for room, expire, and give their escrow lock back)."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from web3 import Web3

from c2d.chain.deploy import OceanAddresses
from c2d.chain.escrow import Escrow
from c2d.db.jobs import JobStore
from c2d.db.pool import Pool
from c2d.settings import ANVIL_KEYS
from c2d.stack.stack import Stack
from provider.escrow_settler import EscrowSettler
from provider.ocean_node.ddo import canonical_json
from tests.c2d.escrow_parties import OCEAN
from tests.helpers import fresh_nonce
from tests.occupy import occupied, release
from tests.workflows.conftest import Jobs
from workflows.local.interpret import interpret

from .market import Market
from .ocean_node_requests import (
    ALGORITHM,
    DATA,
    ENV,
    SLOW,
    escrow_consumer,
    free_body,
    job_count,
    node_initialize,
    paid_start,
    signed,
    trusting,
)

FREE = "freeStartCompute"


def test_root_names_the_endpoints_of_both_clients(client: TestClient, provider_account: LocalAccount) -> None:
    body = client.get("/").json()
    assert body["providerAddress"] == provider_account.address  # ocean.js isValidProvider
    assert body["providerAddresses"] == {"8996": provider_account.address}  # ocean.py
    assert body["nodePublicKey"].startswith("0x")
    endpoints = body["serviceEndpoints"]
    assert endpoints["freeCompute"] == ["POST", "/api/services/freeCompute"]
    assert endpoints["computeStreamableLogs"] == ["GET", "/api/services/computeStreamableLogs"]
    assert endpoints["computeStart"] == ["POST", "/api/services/compute"]


def test_environments_are_one_list_for_ocean_js_and_by_chain_for_ocean_py(
    client: TestClient, provider_account: LocalAccount, addresses: OceanAddresses
) -> None:
    (env,) = client.get("/api/services/computeEnvironments").json()
    assert env["id"] == ENV and env["consumerAddress"] == provider_account.address
    assert [r["id"] for r in env["resources"]] == ["cpu", "ram", "disk"]  # ocean.js indexes them
    cpu = env["resources"][0]
    assert (cpu["min"], cpu["max"], cpu["total"]) == (0.5, 1.0, 4.0)
    (fee,) = env["fees"]["8996"]
    assert fee["feeToken"] == addresses.ocean
    assert {p["id"]: p["price"] for p in fee["prices"]} == {"cpu": 1.0, "ram": 0.5, "disk": 0.0}
    assert env["free"]["maxJobDuration"] == 60 and env["free"]["maxJobs"] == 2
    legacy = client.get("/api/services/computeEnvironments", params={"chainId": 8996}).json()
    assert [e["id"] for e in legacy["8996"]] == [ENV] and "priceMin" in legacy["8996"][0]


def test_a_free_job_runs_the_trusted_algorithm_within_the_free_tier(
    client: TestClient, market: Market, consumer: LocalAccount, jobs: Jobs
) -> None:
    algorithm = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **trusting(algorithm))
    body = free_body(dataset, algorithm, resources=[{"id": "cpu", "amount": 0.5}]) | signed(
        consumer, "freeStartCompute"
    )
    response = client.post("/api/services/freeCompute", json=body)
    assert response.status_code == 200, response.text
    (job,) = response.json()
    assert job["isFree"] is True and job["maxJobDuration"] == 60  # clamped to the free tier
    assert {r["id"]: r["amount"] for r in job["resources"]} == {"cpu": 0.5, "ram": 0.5, "disk": 1.0}
    record = jobs.wait(job["jobId"])
    assert record.status == 70, record
    plan = interpret(record.workflow or {}, {})  # what the local engine enforces
    algorithm_step = plan.step("algorithm")
    assert (algorithm_step.cpu, algorithm_step.memory) == (0.5, 512 * 1024**2)  # the asked half core, ram's minimum
    assert (plan.disk_bytes, algorithm_step.deadline) == (1024**3, 60)  # the free tier's limit on the run

    (status,) = client.get("/api/services/compute", params={"consumerAddress": consumer.address}).json()[-1:]
    assert status["results"][0]["index"] == 0 and status["results"][0]["filename"] == "count.txt"
    query = {"jobId": job["jobId"], "index": 0} | signed(consumer, "getComputeResult")
    result = client.get("/api/services/computeResult", params=query)
    assert result.status_code == 200 and result.content == b"3"


def test_additional_viewers_download_the_results_others_do_not(
    client: TestClient, market: Market, consumer: LocalAccount, jobs: Jobs
) -> None:
    viewer, stranger = Account.create(), Account.create()
    algorithm = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **trusting(algorithm))
    body = free_body(dataset, algorithm, additionalViewers=[viewer.address]) | signed(consumer, FREE)
    (job,) = client.post("/api/services/freeCompute", json=body).json()
    assert jobs.wait(job["jobId"]).status == 70
    for account, expected in ((viewer, 200), (stranger, 404)):
        query = {"jobId": job["jobId"], "index": 0} | signed(account, "getComputeResult")
        response = client.get("/api/services/computeResult", params=query)
        assert response.status_code == expected, response.text
        assert expected != 200 or response.content == b"3"


def test_free_job_rejections_start_nothing(
    client: TestClient, market: Market, consumer: LocalAccount, pool: Pool
) -> None:
    algorithm = market.publish("algorithm", ALGORITHM)
    other = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **trusting(algorithm))
    before = job_count(pool, consumer)
    stranger: LocalAccount = Account.from_key(ANVIL_KEYS[4])

    def refused(body: dict[str, Any], status: int) -> str:
        response = client.post("/api/services/freeCompute", json=body)
        assert response.status_code == status, response.text
        message = response.json()
        assert isinstance(message, str)  # ocean-node's shape: a JSON string
        return message

    untrusted = refused(free_body(dataset, other) | signed(consumer, "freeStartCompute"), 400)
    assert untrusted == f"Algorithm {other.did} not allowed to run on the dataset: {dataset.did}"
    forged = signed(stranger, "freeStartCompute") | {"consumerAddress": consumer.address}
    assert refused(free_body(dataset, algorithm) | forged, 401) == "consumer address and nonce signature mismatch"
    replayed = signed(consumer, "freeStartCompute")
    client.post("/api/services/freeCompute", json=free_body(dataset, other) | replayed)  # uses the nonce
    assert "is not a valid nonce" in refused(free_body(dataset, algorithm) | replayed, 401)
    wrong_command = signed(consumer, "startCompute")
    assert refused(free_body(dataset, algorithm) | wrong_command, 401).startswith("consumer address")
    too_big = free_body(dataset, algorithm, resources=[{"id": "cpu", "amount": 4}])
    message = refused(too_big | signed(consumer, "freeStartCompute"), 400)
    assert message == "Error: Not enough cpu resources. Requested 4, but max is 1"
    unknown = free_body(dataset, algorithm, resources=[{"id": "gpu", "amount": 1}])
    assert refused(unknown | signed(consumer, "freeStartCompute"), 400) == "Error: No such resource gpu"
    no_env = free_body(dataset, algorithm) | {"environment": "nope"} | signed(consumer, "freeStartCompute")
    assert refused(no_env, 500) == "Invalid C2D Environment"
    missing = {"environment": ENV, "algorithm": {"documentId": algorithm.did}} | signed(consumer, "freeStartCompute")
    assert refused(missing, 400).startswith('Missing one ( "datasets" )')
    assert job_count(pool, consumer) == before


def test_stop_and_result_take_either_signature(
    client: TestClient, market: Market, consumer: LocalAccount, jobs: Jobs
) -> None:
    slow = market.publish("algorithm", SLOW)
    trust = {"did": slow.did, "filesChecksum": hashlib.sha256(SLOW).hexdigest()}
    dataset = market.publish("dataset", DATA, compute={"publisherTrustedAlgorithms": [trust]})
    body = free_body(dataset, slow) | signed(consumer, "freeStartCompute")
    (job,) = client.post("/api/services/freeCompute", json=body).json()
    jobs.wait(job["jobId"], status=40)
    other = signed(consumer, "getComputeResult")  # a valid signature for another command
    stop = client.put("/api/services/compute", params={"jobId": job["jobId"]} | other)
    assert stop.status_code == 400, stop.text
    stop = client.put("/api/services/compute", params={"jobId": job["jobId"]} | signed(consumer, "stopCompute"))
    assert stop.status_code == 200 and stop.json()[0]["jobId"] == job["jobId"]
    assert jobs.wait(job["jobId"]).stopreq > 0


def test_initialize_refusals_are_ocean_nodes(client: TestClient, market: Market, consumer: LocalAccount) -> None:
    algorithm = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **trusting(algorithm))
    body: dict[str, Any] = {
        "datasets": [{"documentId": dataset.did, "serviceId": "svc-0"}],
        "algorithm": {"documentId": algorithm.did, "serviceId": "svc-0"},
        "environment": ENV,
        "consumerAddress": consumer.address,
        "maxJobDuration": 120,
        "payment": {"chainId": 8996, "token": market.addresses.ocean, "resources": [{"id": "cpu", "amount": 1}]},
    }

    def refused(changes: dict[str, Any], status: int) -> str:
        response = client.post("/api/services/initializeCompute", json=body | changes)
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("text/plain")
        return str(response.text)

    assert refused({"payment": {"chainId": 8996}}, 400) == "Invalid payment options"
    assert refused({"maxJobDuration": -1}, 400) == "Invalid maxJobDuration"
    assert refused({"consumerAddress": "0x12"}, 400) == 'Parameter : "consumerAddress" is not a valid web3 address'
    assert refused({"environment": "nope"}, 500) == "Invalid C2D Environment"
    too_big = {"payment": body["payment"] | {"resources": [{"id": "ram", "amount": 9}]}}
    assert refused(too_big, 500) == "Error: Not enough ram resources. Requested 9, but max is 1"
    other_token = {"payment": body["payment"] | {"token": market.addresses.dispenser}}
    assert refused(other_token, 500).startswith("This compute env does not accept payments on chain: 8996")


def test_ddos_carry_indexed_metadata_and_validate_takes_ocean_nodes_body(
    client: TestClient, market: Market, publisher: LocalAccount
) -> None:
    asset = market.publish("dataset", DATA)
    ddo = client.get(f"/api/aquarius/assets/ddo/{asset.did}").json()
    indexed = ddo["indexedMetadata"]
    assert indexed["event"]["txid"] == ddo["event"]["tx"] and indexed["nft"]["owner"] == publisher.address
    assert indexed["stats"][0]["datatokenAddress"] == ddo["datatokens"][0]["address"]
    plain = {key: value for key, value in ddo.items() if key not in ("indexedMetadata", "event", "nft")}
    body = {"ddo": plain, "publisherAddress": publisher.address} | {
        k: v for k, v in signed(publisher, "validateDDO").items() if k != "consumerAddress"
    }
    proof = client.post("/api/aquarius/assets/ddo/validate", json=body)
    assert proof.status_code == 200, proof.text
    assert proof.json()["hash"] == "0x" + hashlib.sha256(canonical_json(plain)).hexdigest()
    replayed = client.post("/api/aquarius/assets/ddo/validate", json=body)
    assert replayed.status_code == 400


def test_encrypt_verifies_a_signature_when_one_is_sent(client: TestClient, consumer: LocalAccount) -> None:
    query = {"chainId": 8996} | signed(consumer, "encrypt")
    assert client.post("/api/services/encrypt", params=query, content=b"secret").status_code == 201
    forged = {"chainId": 8996} | signed(consumer, "download")
    response = client.post("/api/services/encrypt", params=forged, content=b"secret")
    assert response.status_code == 400, response.text
    assert client.post("/api/services/encrypt", params={"chainId": 8996}, content=b"x").status_code == 201


def test_a_paid_job_locks_its_price_and_the_settlement_claims_what_it_ran(
    client: TestClient, market: Market, stack: Stack, provider_account: LocalAccount, jobs: Jobs, pool: Pool
) -> None:
    consumer = escrow_consumer(market, stack, provider_account, 20 * OCEAN)
    algorithm = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **trusting(algorithm))
    quote = client.post("/api/services/initializeCompute", json=node_initialize(market, consumer, dataset, algorithm))
    payment = quote.json()["payment"]
    # cpu 1 x 1/min + ram 0.5 (the minimum) x 0.5/min, for 2 started minutes
    assert payment == {
        "escrowAddress": market.addresses.escrow,
        "chainId": 8996,
        "payee": provider_account.address,
        "token": market.addresses.ocean,
        "amount": str(int(2.5 * OCEAN)),
        "minLockSeconds": 120 + 3600,
    }
    response = client.post("/api/services/compute", json=paid_start(market, consumer, dataset, algorithm))
    assert response.status_code == 200, response.text
    (job,) = response.json()
    assert job["payment"]["lockTx"] and job["isFree"] is False
    escrow = Escrow(market.chain, str(market.addresses.escrow))
    assert escrow.user_funds(consumer.address, market.addresses.ocean).locked == int(2.5 * OCEAN)
    assert jobs.wait(job["jobId"]).status == 70

    services = client.app.state.services  # type: ignore[attr-defined]
    settler = EscrowSettler(services.payments, JobStore(pool), services.statuses, 1)
    assert settler.run_once() >= 1
    funds = escrow.user_funds(consumer.address, market.addresses.ocean)
    assert funds.locked == 0 and funds.available == 20 * OCEAN - int(1.25 * OCEAN)  # 1 minute charged (the minimum)
    (status,) = client.get("/api/services/compute", params={"consumerAddress": consumer.address}).json()
    assert status["payment"]["claimTx"] and status["payment"]["cost"] == str(int(1.25 * OCEAN))

    # the orders open the data for the service's timeout: initialize says so, and they start another job
    again = node_initialize(market, consumer, dataset, algorithm, data=job["agreementId"])
    answer = client.post("/api/services/initializeCompute", json=again).json()
    assert answer["datasets"][0]["validOrder"] == job["agreementId"] and "providerFee" not in answer["datasets"][0]


def test_paid_start_refusals_lock_nothing(
    client: TestClient, market: Market, stack: Stack, provider_account: LocalAccount, pool: Pool
) -> None:
    algorithm = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **trusting(algorithm))
    escrow = Escrow(market.chain, str(market.addresses.escrow))

    def refused(consumer: LocalAccount, body: dict[str, Any], status: int) -> str:
        response = client.post("/api/services/compute", json=body)
        assert response.status_code == status, response.text
        assert escrow.user_funds(consumer.address, market.addresses.ocean).locked == 0
        assert job_count(pool, consumer) == 0
        return str(response.json())

    broke = escrow_consumer(market, stack, provider_account, 0)
    message = refused(broke, paid_start(market, broke, dataset, algorithm), 400)
    assert message == f"User {broke.address} does not have enough funds"
    stingy = escrow_consumer(market, stack, provider_account, 20 * OCEAN)
    escrow.authorize(stingy, market.addresses.ocean, provider_account.address, OCEAN, 7200, 10)
    assert refused(stingy, paid_start(market, stingy, dataset, algorithm), 400).endswith("(will go over limit)")
    rich = escrow_consumer(market, stack, provider_account, 20 * OCEAN)
    body = paid_start(market, rich, dataset, algorithm)
    thief = escrow_consumer(market, stack, provider_account, 20 * OCEAN)  # reuses rich's orders
    stolen = {k: v for k, v in body.items() if k not in ("consumerAddress", "nonce", "signature")}
    assert "not by" in refused(thief, stolen | signed(thief, "startCompute"), 400)
    no_tx = body | {"datasets": [{"documentId": dataset.did, "serviceId": "svc-0"}]} | signed(rich, "startCompute")
    assert refused(rich, no_tx, 500) == f"Missing transferTxId for DDO {dataset.did}"
    untrusted = market.publish("algorithm", ALGORITHM)
    message = client.post(
        "/api/services/initializeCompute",
        json=node_initialize(market, rich, dataset, algorithm)
        | {"algorithm": {"documentId": untrusted.did, "serviceId": "svc-0"}},
    ).text
    assert message == f"Algorithm {untrusted.did} not allowed to run on the dataset: {dataset.did}"


# -- the queue ---------------------------------------------------------------------------------------------
def environment(client: TestClient) -> dict[str, Any]:
    (env,) = client.get("/api/services/computeEnvironments").json()
    assert isinstance(env, dict)
    return env


def test_a_free_job_queued_for_room_runs_when_room_frees(
    client: TestClient, market: Market, consumer: LocalAccount, jobs: Jobs, pool: Pool
) -> None:
    algorithm = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **trusting(algorithm))
    with occupied(pool, ENV, 4) as holders:  # 4 Provider v2.1 jobs: 1 core, 1 GiB each, all 4 jobs
        refused = client.post("/api/services/freeCompute", json=free_body(dataset, algorithm) | signed(consumer, FREE))
        assert (refused.status_code, refused.json()) == (400, "Not enough available cpu")
        env = environment(client)
        assert (env["runningJobs"], env["queuedJobs"], env["resources"][0]["inUse"]) == (4, 0, 4.0)
        body = free_body(dataset, algorithm, queueMaxWaitTime=120) | signed(consumer, FREE)
        response = client.post("/api/services/freeCompute", json=body)
        assert response.status_code == 200, response.text
        (job,) = response.json()
        assert (job["status"], job["statusText"]) == (1, "Job queued")
        env = environment(client)
        assert (env["runningJobs"], env["queuedJobs"], env["queuedFreeJobs"], env["runningfreeJobs"]) == (4, 1, 1, 0)
        time.sleep(1)  # the engine polls every 0.2 s: it leaves the job alone while there is no room
        assert jobs.statuses(job["jobId"]) == [1]
        release(pool, holders[0])
        record = jobs.wait(job["jobId"])
    assert record.status == 70 and jobs.statuses(job["jobId"])[:2] == [1, 10]


def test_a_job_still_queued_after_its_wait_expires_and_its_lock_is_given_back(
    client: TestClient, market: Market, stack: Stack, provider_account: LocalAccount, jobs: Jobs, pool: Pool
) -> None:
    consumer = escrow_consumer(market, stack, provider_account, 20 * OCEAN)
    algorithm = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **trusting(algorithm))
    escrow = Escrow(market.chain, str(market.addresses.escrow))
    with occupied(pool, ENV, 4):
        body = paid_start(market, consumer, dataset, algorithm, queueMaxWaitTime=2)
        response = client.post("/api/services/compute", json=body)
        assert response.status_code == 200, response.text
        (job,) = response.json()
        assert (job["status"], job["statusText"]) == (1, "Job queued") and job["payment"]["lockTx"]
        assert escrow.user_funds(consumer.address, market.addresses.ocean).locked == int(2.5 * OCEAN)
        record = jobs.wait(job["jobId"], timeout=20)
    assert (record.status, record.status_text) == (2, "Job expired in queue")
    assert jobs.statuses(job["jobId"]) == [1, 2] and record.date_finished is not None
    (status,) = client.get("/api/services/compute", params={"consumerAddress": consumer.address}).json()
    assert (status["status"], status["statusText"]) == (2, "Job expired in queue") and status["dateFinished"]

    services = client.app.state.services  # type: ignore[attr-defined]
    assert EscrowSettler(services.payments, JobStore(pool), services.statuses, 1).run_once() >= 1
    funds = escrow.user_funds(consumer.address, market.addresses.ocean)
    assert (funds.locked, funds.available) == (0, 20 * OCEAN)  # the algorithm never ran: nothing is claimed
    (status,) = client.get("/api/services/compute", params={"consumerAddress": consumer.address}).json()
    assert status["payment"]["cancelTx"] and status["payment"]["cost"] == "0"


def test_a_queued_job_stopped_by_its_consumer_ends_at_once(
    client: TestClient, market: Market, consumer: LocalAccount, jobs: Jobs, pool: Pool
) -> None:
    algorithm = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **trusting(algorithm))
    with occupied(pool, ENV, 4):
        body = free_body(dataset, algorithm, queueMaxWaitTime=600) | signed(consumer, FREE)
        (job,) = client.post("/api/services/freeCompute", json=body).json()
        stop = client.put("/api/services/compute", params={"jobId": job["jobId"]} | signed(consumer, "stopCompute"))
        assert stop.status_code == 200, stop.text
        record = jobs.wait(job["jobId"], timeout=5)  # not after its 600 s wait, nor once room frees
    assert (record.status, record.stopreq, record.results or []) == (70, 1, [])
    assert jobs.statuses(job["jobId"]) == [1, 70]
    assert environment(client)["queuedJobs"] == 0


def test_ocean_js_signatures_hold_when_the_digest_starts_with_a_zero_byte(
    client: TestClient, consumer: LocalAccount
) -> None:
    """ocean.js signs the keccak digest through ethers' toBeArray, which drops leading zero bytes (ocean-node checks
    it the same way): for 1 message in 256 it signs 31 bytes. Such a signature must hold."""
    base = int(fresh_nonce())
    nonce = next(
        str(n) for n in range(base, base + 100_000) if Web3.keccak(text=f"{consumer.address}{n}encrypt")[0] == 0
    )
    query = {"chainId": 8996} | signed(consumer, "encrypt", nonce)
    response = client.post("/api/services/encrypt", params=query, content=b"secret")
    assert response.status_code == 201, response.text
