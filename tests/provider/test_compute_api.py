"""The Ocean compute API over real jobs: status, stop, delete, results, environments, nonces, errors."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient

from c2d.chain.signing import sign_message
from tests.fileserver import FileServer
from tests.helpers import fresh_nonce
from tests.workflows.conftest import Jobs
from tests.workflows.jobs import job_spec, make_environment

ENV = make_environment()


def _signed(account: LocalAccount, message: str) -> dict[str, str]:
    nonce = fresh_nonce()
    return {"nonce": nonce, "signature": sign_message(account.key.hex(), message + nonce)}


def _finished_job(jobs: Jobs, file_server: FileServer, owner: LocalAccount, code: str | None = None) -> str:
    file_server.files["/api.csv"] = b"1,2,3"
    code = code or "open('/data/outputs/answer.txt', 'w').write('42')"
    job_id = jobs.submit(job_spec(code, [f"{file_server.url}/api.csv"], owner=owner.address), ENV)
    assert jobs.wait(job_id).status == 70
    return job_id


def test_root_lists_endpoints_and_provider_address(client: TestClient, provider_account: LocalAccount) -> None:
    body = client.get("/").json()
    assert body["providerAddresses"] == {"8996": provider_account.address}
    assert body["serviceEndpoints"]["computeStart"] == ["POST", "/api/services/compute"]
    assert body["serviceEndpoints"]["computeResult"] == ["GET", "/api/services/computeResult"]
    assert client.get("/spec").json()["info"]["title"] == "C2D node provider"


def test_status_and_result_download(
    client: TestClient, jobs: Jobs, file_server: FileServer, consumer: LocalAccount
) -> None:
    job_id = _finished_job(jobs, file_server, consumer)
    (status,) = client.get(
        "/api/services/compute", params={"consumerAddress": consumer.address, "jobId": job_id}
    ).json()
    assert (status["status"], status["statusText"], status["owner"]) == (70, "Job finished", consumer.address)
    assert float(status["dateFinished"]) >= float(status["dateCreated"])
    assert status["results"][0] == {"filename": "answer.txt", "filesize": 2, "type": "output"}
    assert [r["type"] for r in status["results"]] == ["output", "algorithmLog", "configurationLog", "publishLog"]

    query = {"consumerAddress": consumer.address, "jobId": job_id, "index": "0"}
    response = client.get(
        "/api/services/computeResult", params=query | _signed(consumer, f"{consumer.address}{job_id}0")
    )
    assert response.status_code == 200 and response.content == b"42"
    assert "answer.txt" in response.headers["content-disposition"]


def test_result_rejections(
    client: TestClient, jobs: Jobs, file_server: FileServer, consumer: LocalAccount, publisher: LocalAccount
) -> None:
    job_id = _finished_job(jobs, file_server, consumer)
    url = "/api/services/computeResult"
    base = {"consumerAddress": consumer.address, "jobId": job_id, "index": "0"}
    message = f"{consumer.address}{job_id}0"

    forged = base | _signed(publisher, message)  # signed by someone else
    response = client.get(url, params=forged)
    assert response.status_code == 400
    body = response.json()
    assert body["message"] == "Validation error" and body["success"] is False
    assert "Invalid signature" in body["errors"]["signature"]

    signed = _signed(consumer, message)
    assert client.get(url, params=base | signed).status_code == 200
    replay = client.get(url, params=base | signed)  # the same nonce again
    assert replay.status_code == 400 and "not greater than the last one used" in replay.json()["errors"]["signature"]

    other = client.get(
        url, params=base | {"consumerAddress": publisher.address} | _signed(publisher, f"{publisher.address}{job_id}0")
    )
    assert other.status_code == 404 and other.json() == {"error": f"No job {job_id} for owner {publisher.address}"}
    missing = client.get(url, params=base | {"index": "9"} | _signed(consumer, f"{consumer.address}{job_id}9"))
    assert missing.status_code == 404 and missing.json()["error"] == "No such index 9 in this compute job"
    bad = client.get(url, params={"consumerAddress": "nope", "jobId": job_id, "index": "0"})
    assert bad.status_code == 400 and "consumerAddress" in bad.json()["errors"]


def test_stop_and_delete(client: TestClient, jobs: Jobs, file_server: FileServer, consumer: LocalAccount) -> None:
    file_server.files["/api.csv"] = b"1,2,3"
    code = "import time\nprint('running', flush=True)\ntime.sleep(120)"
    job_id = jobs.submit(job_spec(code, [f"{file_server.url}/api.csv"], owner=consumer.address), ENV)
    jobs.wait_log(job_id, "running")
    query = {"consumerAddress": consumer.address, "jobId": job_id}
    message = f"{consumer.address}{job_id}"
    (status,) = client.put("/api/services/compute", params=query | _signed(consumer, message)).json()
    assert status["stopreq"] == 1
    finished = jobs.wait(job_id, timeout=10)
    assert (finished.status, finished.stopreq) == (70, 1)

    (status,) = client.delete("/api/services/compute", params=query | _signed(consumer, message)).json()
    assert status["removed"] == 1 and status["results"] == ""
    assert not (jobs.settings.store_dir / job_id).exists()


def test_environments_and_nonce(client: TestClient, consumer: LocalAccount, provider_account: LocalAccount) -> None:
    envs = client.get("/api/services/computeEnvironments", params={"chainId": 8996}).json()["8996"]
    assert envs[0]["id"] == "local-cpu" and envs[0]["consumerAddress"] == provider_account.address
    assert float(envs[0]["priceMin"]) == 0 and envs[0]["maxJobDuration"] == 600
    assert client.get("/api/services/computeEnvironments", params={"chainId": 1}).json() == {"1": []}
    fresh = "0x" + "12" * 20
    assert client.get("/api/services/nonce", params={"userAddress": fresh}).json() == {"nonce": 0}
    assert client.get("/api/services/nonce").status_code == 400


def test_a_nul_byte_is_an_unknown_id_not_a_server_error(client: TestClient, consumer: LocalAccount) -> None:
    """Postgres refuses NUL bytes in text: ids that hold one must never reach it (schemathesis found a 500)."""
    did = client.get("/api/services/download", params={"documentId": "did:op:\x00", "serviceId": "s"})
    assert did.status_code == 400 and "did_not_found" in did.text
    ddo = client.get("/api/aquarius/assets/ddo/did:op:%00")
    assert ddo.status_code == 404
    jobs = client.get("/api/services/compute", params={"consumerAddress": consumer.address, "jobId": "ab\x00"})
    assert jobs.status_code == 200 and jobs.json() == []
