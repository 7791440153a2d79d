"""Ordering and starting jobs on the real chain: the happy path and every rejection, none of which
starts anything."""

from __future__ import annotations

import time
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from c2d.chain.signing import ProviderFee, sign_provider_fee
from c2d.chain.transactions import DataAsset
from c2d.db.jobs import JobStore
from c2d.db.pool import Pool
from c2d.settings import ANVIL_KEYS
from tests.workflows.conftest import Jobs

from .market import Market

ALGORITHM = (
    b"import os, json\n"
    b"did = json.loads(os.environ['DIDS'])[0]\n"
    b"rows = open(f'/data/inputs/{did}/0').read().split()\n"
    b"open('/data/outputs/count.txt', 'w').write(str(len(rows)))\n"
)
DATA = b"a\nb\nc\n"
Bought = tuple[DataAsset, DataAsset, str, str | None]  # dataset, algorithm, their transferTxIds


def _trust(algorithm_did: str, **extra: str) -> dict[str, Any]:  # keyword arguments of Market.publish
    return {
        "compute": {
            "allowRawAlgorithm": False,
            "publisherTrustedAlgorithms": [{"did": algorithm_did, **extra}],
            "publisherTrustedAlgorithmPublishers": [],
        }
    }


def _job_count(pool: Pool, consumer: LocalAccount) -> int:
    return len(JobStore(pool).find(consumer.address))


def test_order_and_run_a_job_end_to_end(market: Market, consumer: LocalAccount, jobs: Jobs) -> None:
    started = market.start_trusted(consumer, ALGORITHM, DATA)
    response, dataset, algorithm, data_tx = started.response, started.dataset, started.algorithm, started.data_tx
    assert response.status_code == 200, response.text
    (status,) = response.json()
    assert (status["owner"], status["agreementId"], status["inputDID"]) == (consumer.address, data_tx, [dataset.did])
    assert float(status["expireTimestamp"]) > time.time() + 6 * 86400  # results kept for the storage expiry
    job = jobs.wait(status["jobId"])
    assert job.status == 70, job.status_text
    assert (jobs.settings.store_dir / job.job_id / "outputs" / "count.txt").read_text() == "3"

    # The order (and its provider fee) is still valid but used: initializeCompute says reuse it.
    answer = market.client.post(
        "/api/services/initializeCompute",
        json={
            "datasets": [{"documentId": dataset.did, "serviceId": "svc-0", "transferTxId": data_tx}],
            "algorithm": {"documentId": algorithm.did, "serviceId": "svc-0"},
            "compute": {"env": market.env, "validUntil": int(time.time()) + 300},
            "consumerAddress": consumer.address,
        },
    ).json()
    assert answer["datasets"][0]["validOrder"] == data_tx and "providerFee" in answer["datasets"][0]


@pytest.mark.parametrize("key", ["additionalDatasets", "additionalInputs"])
def test_a_second_dataset_under_either_name_is_an_input_of_the_job(
    market: Market, pool: Pool, consumer: LocalAccount, key: str
) -> None:
    """ocean.py names the other datasets ``additionalInputs``, Ocean's provider ``additionalDatasets``: both
    are read, never silently dropped (the job would run without a dataset that was paid for)."""
    algorithm = market.publish("algorithm", ALGORITHM)
    first = market.publish("dataset", DATA, **_trust(algorithm.did))
    second = market.publish("dataset", b"x\ny\n", **_trust(algorithm.did))
    data_tx, algo_tx = market.buy(consumer, first, algorithm)
    answer = market.initialize(consumer, second, algorithm)
    second_tx = market.order(consumer, second, ProviderFee.from_wire(answer["datasets"][0]["providerFee"]))
    body = market.start_body(consumer, first, data_tx, algorithm, algo_tx)
    body[key] = [{"documentId": second.did, "serviceId": "svc-0", "transferTxId": second_tx}]
    response = market.client.post("/api/services/compute", json=body)
    assert response.status_code == 200, response.text
    (status,) = response.json()
    assert status["inputDID"] == [first.did, second.did]
    job = JobStore(pool).get(status["jobId"])
    assert job is not None and job.input_dids == [first.did, second.did]


def test_both_names_for_different_datasets_are_refused(
    bought: Bought, market: Market, pool: Pool, consumer: LocalAccount
) -> None:
    dataset, algorithm, data_tx, algo_tx = bought
    body = market.start_body(consumer, dataset, data_tx, algorithm, algo_tx)
    body["additionalDatasets"] = [{"documentId": dataset.did, "serviceId": "svc-0", "transferTxId": data_tx}]
    body["additionalInputs"] = [{"documentId": algorithm.did, "serviceId": "svc-0", "transferTxId": algo_tx}]
    assert _rejected(market, pool, consumer, body)["error"] == {"additionalDatasets": "conflict"}


def _rejected(market: Market, pool: Pool, consumer: LocalAccount, body: dict[str, Any]) -> dict[str, Any]:
    before = _job_count(pool, consumer)
    response = market.client.post("/api/services/compute", json=body)
    assert response.status_code == 400, response.text
    assert _job_count(pool, consumer) == before  # nothing started
    return dict(response.json())


@pytest.fixture
def bought(market: Market, consumer: LocalAccount) -> Bought:
    algorithm = market.publish("algorithm", ALGORITHM)
    dataset = market.publish("dataset", DATA, **_trust(algorithm.did))
    data_tx, algo_tx = market.buy(consumer, dataset, algorithm)
    return dataset, algorithm, data_tx, algo_tx


def test_signature_nonce_environment_and_did_rejections(
    market: Market, pool: Pool, consumer: LocalAccount, publisher: LocalAccount, bought: Bought
) -> None:
    dataset, algorithm, data_tx, algo_tx = bought
    forged = market.start_body(consumer, dataset, data_tx, algorithm, algo_tx, signer=publisher)
    assert "Invalid signature" in str(_rejected(market, pool, consumer, forged)["errors"])

    body = market.start_body(consumer, dataset, data_tx, algorithm, algo_tx)
    body["environment"] = "gpu-cluster"
    assert _rejected(market, pool, consumer, body) == {"error": "Environment invalid or does not exist"}
    body["environment"] = market.env  # the nonce was consumed by the rejected request
    assert "not greater than the last one used" in str(_rejected(market, pool, consumer, body)["errors"])

    body = market.start_body(consumer, dataset, data_tx, algorithm, algo_tx)
    body["dataset"]["documentId"] = "did:op:" + "00" * 32
    body["signature"] = _resign(consumer, body)
    assert _rejected(market, pool, consumer, body)["error"] == {"dataset.documentId": "did_not_found"}


def _resign(account: LocalAccount, body: dict[str, Any]) -> str:
    from c2d.chain.signing import sign_message

    did = body["dataset"]["documentId"]
    return sign_message(account.key.hex(), f"{account.address}{did}{body['nonce']}")


def test_order_rejections(
    market: Market, pool: Pool, consumer: LocalAccount, publisher: LocalAccount, bought: Bought
) -> None:
    dataset, algorithm, data_tx, algo_tx = bought
    # Someone else presents the consumer's order.
    body = market.start_body(publisher, dataset, data_tx, algorithm, algo_tx)
    error = _rejected(market, pool, publisher, body)
    assert list(error["error"].values()) == ["order_invalid"]
    assert "not for " + publisher.address in str(error["reason"])

    # A provider fee signed by another key (valid on chain, not ours).
    other = sign_provider_fee(
        ANVIL_KEYS[4],
        ProviderFee.from_wire(
            market.initialize(consumer, dataset, algorithm)["datasets"][0]["providerFee"]
        ).provider_data,
        market.addresses.ocean,
        0,
        int(time.time()) + 600,
    )
    foreign_tx = market.order(consumer, dataset, other)
    error = _rejected(market, pool, consumer, market.start_body(consumer, dataset, foreign_tx, algorithm, algo_tx))
    assert "another provider" in str(error["reason"])

    # An expired provider fee (signed by us, validUntil in the past).
    answer = market.initialize(consumer, dataset, algorithm)
    fee = ProviderFee.from_wire(answer["datasets"][0]["providerFee"])
    from c2d.settings import load_settings  # the session settings use the default provider key

    expired = sign_provider_fee(
        load_settings().provider.private_key.get_secret_value(),
        fee.provider_data,
        fee.provider_fee_token,
        0,
        int(time.time()) - 5,
    )
    expired_tx = market.order(consumer, dataset, expired)
    error = _rejected(market, pool, consumer, market.start_body(consumer, dataset, expired_tx, algorithm, algo_tx))
    assert "expired" in str(error["reason"])
    assert error["error"] == {"dataset.serviceId": "provider_fee_expired"}  # the code names the cause

    # Both fees expired (a client that waited too long): the dataset's is named, as Ocean's provider checks the
    # datasets' orders before the algorithm's.
    algo_fee = ProviderFee.from_wire(answer["algorithm"]["providerFee"])
    key = load_settings().provider.private_key.get_secret_value()
    expired_algo = sign_provider_fee(key, algo_fee.provider_data, algo_fee.provider_fee_token, 0, int(time.time()) - 5)
    expired_algo_tx = market.order(consumer, algorithm, expired_algo)
    body = market.start_body(consumer, dataset, expired_tx, algorithm, expired_algo_tx)
    assert _rejected(market, pool, consumer, body)["error"] == {"dataset.serviceId": "provider_fee_expired"}
    body = market.start_body(consumer, dataset, data_tx, algorithm, expired_algo_tx)
    assert _rejected(market, pool, consumer, body)["error"] == {"algorithm": "provider_fee_expired"}

    # The good order starts one job, and only one.
    first = market.client.post(
        "/api/services/compute", json=market.start_body(consumer, dataset, data_tx, algorithm, algo_tx)
    )
    assert first.status_code == 200, first.text
    error = _rejected(market, pool, consumer, market.start_body(consumer, dataset, data_tx, algorithm, algo_tx))
    assert error["error"] == {"order": "order_already_used"}


def test_trusted_algorithm_rejections(market: Market, pool: Pool, consumer: LocalAccount) -> None:
    algorithm = market.publish("algorithm", ALGORITHM)
    refused_at_initialize: list[tuple[dict[str, Any], str]] = [
        (
            {"compute": {"publisherTrustedAlgorithms": [], "publisherTrustedAlgorithmPublishers": []}},
            "not_trusted_algo",
        ),
        (_trust("did:op:" + "11" * 32), "not_trusted_algo"),
        (_trust(algorithm.did, containerSectionChecksum="cd" * 32), "algorithm_container_checksum_mismatch"),
        ({"compute": {"publisherTrustedAlgorithmPublishers": ["0x" + "22" * 20]}}, "not_trusted_algo_publisher"),
    ]
    for ddo_args, code in refused_at_initialize:
        dataset = market.publish("dataset", DATA, **ddo_args)
        response = market.client.post(
            "/api/services/initializeCompute",
            json={
                "datasets": [{"documentId": dataset.did, "serviceId": "svc-0"}],
                "algorithm": {"documentId": algorithm.did, "serviceId": "svc-0"},
                "compute": {"env": market.env, "validUntil": int(time.time()) + 60},
                "consumerAddress": consumer.address,
            },
        )
        assert response.status_code == 400 and response.json()["error"] == {"dataset": code}, response.text
    # The files checksum needs the algorithm's files: checked when the job starts.
    dataset = market.publish("dataset", DATA, **_trust(algorithm.did, filesChecksum="ab" * 32))
    data_tx, algo_tx = market.buy(consumer, dataset, algorithm)
    error = _rejected(market, pool, consumer, market.start_body(consumer, dataset, data_tx, algorithm, algo_tx))
    assert error["error"] == {"dataset": "algorithm_file_checksum_mismatch"}
    # Publishers can be trusted instead of algorithms.
    trusting = market.publish(
        "dataset", DATA, compute={"publisherTrustedAlgorithmPublishers": [market.publisher.address]}
    )
    data_tx, algo_tx = market.buy(consumer, trusting, algorithm)
    ok = market.client.post(
        "/api/services/compute", json=market.start_body(consumer, trusting, data_tx, algorithm, algo_tx)
    )
    assert ok.status_code == 200, ok.text


def test_raw_algorithms_only_where_allowed(market: Market, pool: Pool, consumer: LocalAccount, jobs: Jobs) -> None:
    raw = {
        "rawcode": "open('/data/outputs/raw.txt', 'w').write('raw ran')",
        "container": {"entrypoint": "python $ALGO", "image": "python", "tag": "3.11"},
    }
    closed = market.publish("dataset", DATA)
    answer = market.client.post(
        "/api/services/initializeCompute",
        json={
            "datasets": [{"documentId": closed.did, "serviceId": "svc-0"}],
            "algorithm": {"meta": raw},
            "compute": {"env": market.env, "validUntil": int(time.time()) + 60},
            "consumerAddress": consumer.address,
        },
    )
    assert answer.status_code == 400 and answer.json()["error"] == {"dataset": "no_raw_algo_allowed"}

    opened = market.publish("dataset", DATA, compute={"allowRawAlgorithm": True})
    tx, _ = market.buy(consumer, opened, None)
    response = market.client.post(
        "/api/services/compute", json=market.start_body(consumer, opened, tx, None, None, raw=raw)
    )
    assert response.status_code == 200, response.text
    job = jobs.wait(response.json()[0]["jobId"])
    assert job.status == 70 and job.algo_did == "raw"


def test_compute_data_never_downloads(market: Market) -> None:
    dataset = market.publish("dataset", DATA)
    params = {"documentId": dataset.did, "serviceId": "svc-0"}
    init = market.client.get("/api/services/initialize", params=params)
    assert init.status_code == 400
    assert init.json()["error"] == "Provider 8996: Use the initializeCompute endpoint to initialize compute jobs."
    download = market.client.get("/api/services/download", params=params)
    assert download.status_code == 400 and "never leaves the node" in download.json()["error"]
    unknown = market.client.get("/api/services/download", params={"documentId": "did:op:" + "9" * 64})
    assert unknown.status_code == 400 and unknown.json()["error"] == {"documentId.documentId": "did_not_found"}
