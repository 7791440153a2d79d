"""A small client of the Ocean provider API (the calls ocean.py makes), used by ``c2d demo``: it sends and reads
the same wire models the provider serves (:mod:`provider.models`)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from eth_account.signers.local import LocalAccount

from c2d.chain.signing import sign_message
from provider.exceptions import ProviderError
from provider.models import (
    ComputeAlgorithm,
    ComputeEnvironmentInfo,
    ComputeInput,
    ComputeStatus,
    Ddo,
    InitializeComputeResponse,
)


class ProviderClientError(ProviderError):
    """The provider answered with an error (its body is in the message)."""


class ProviderClient:
    def __init__(self, base_url: str, timeout: float = 60.0) -> None:
        self.http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _check(self, response: httpx.Response, *ok: int) -> httpx.Response:
        if response.status_code not in (ok or (200,)):
            raise ProviderClientError(
                f"{response.request.method} {response.request.url.path}: "
                f"HTTP {response.status_code} {response.text[:500]}"
            )
        return response

    def _signed(self, account: LocalAccount, message: str) -> dict[str, str]:
        """Nonce = the provider's last one + 1 (what ocean.py 3.x does), signature over message + nonce."""
        current = self._check(self.http.get("/api/services/nonce", params={"userAddress": account.address}))
        nonce = str(int(float(current.json()["nonce"])) + 1)
        return {"nonce": nonce, "signature": sign_message(account.key.hex(), message + nonce)}

    def encrypt(self, data: bytes, chain_id: int) -> bytes:
        response = self.http.post(
            "/api/services/encrypt",
            params={"chainId": chain_id},
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return bytes.fromhex(self._check(response, 201).text.removeprefix("0x"))

    def wait_ddo(self, did: str, timeout: float = 30.0) -> Ddo:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            response = self.http.get(f"/api/aquarius/assets/ddo/{did}")
            if response.status_code == 200:
                ddo: Ddo = response.json()
                return ddo
            time.sleep(0.2)
        raise ProviderClientError(f"{did} was not indexed within {timeout:.0f} s")

    def environments(self, chain_id: int) -> list[ComputeEnvironmentInfo]:
        response = self._check(self.http.get("/api/services/computeEnvironments", params={"chainId": chain_id}))
        return [ComputeEnvironmentInfo.model_validate(env) for env in response.json()[str(chain_id)]]

    def initialize_compute(
        self, consumer: str, env: str, valid_until: int, datasets: list[ComputeInput], algorithm: ComputeAlgorithm
    ) -> InitializeComputeResponse:
        body = {
            "datasets": [_wire(dataset) for dataset in datasets],
            "algorithm": _wire(algorithm),
            "compute": {"env": env, "validUntil": valid_until},
            "consumerAddress": consumer,
        }
        answer = self._check(self.http.post("/api/services/initializeCompute", json=body)).json()
        return InitializeComputeResponse.model_validate(answer)

    def start_compute(
        self, account: LocalAccount, env: str, dataset: ComputeInput, algorithm: ComputeAlgorithm
    ) -> ComputeStatus:
        body = {
            "dataset": _wire(dataset),
            "algorithm": _wire(algorithm),
            "environment": env,
            "consumerAddress": account.address,
            "additionalInputs": [],
            **self._signed(account, f"{account.address}{dataset.document_id}"),
        }
        jobs = self._check(self.http.post("/api/services/compute", json=body)).json()
        return ComputeStatus.model_validate(jobs[0])

    def status(self, consumer: str, job_id: str) -> ComputeStatus:
        params = {"consumerAddress": consumer, "jobId": job_id}
        jobs = self._check(self.http.get("/api/services/compute", params=params)).json()
        return ComputeStatus.model_validate(jobs[0])

    def download_result(self, account: LocalAccount, job_id: str, index: int, dest: Path) -> int:
        """Stream result ``index`` to ``dest``; returns its size."""
        params = {
            "consumerAddress": account.address,
            "jobId": job_id,
            "index": str(index),
            **self._signed(account, f"{account.address}{job_id}{index}"),
        }
        size = 0
        with self.http.stream("GET", "/api/services/computeResult", params=params) as response:
            if response.status_code != 200:
                response.read()
                self._check(response)
            with open(dest, "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
        return size


def _wire(request: ComputeInput) -> dict[str, object]:
    """A request model as the provider reads it: wire names, unset fields left out."""
    return request.model_dump(mode="json", by_alias=True, exclude_none=True)
