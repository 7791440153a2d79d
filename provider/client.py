"""A small client of the Ocean provider API (the calls ocean.py makes), used by ``c2d demo``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from eth_account.signers.local import LocalAccount

from c2d.chain.signing import sign_message
from provider.exceptions import ProviderError


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

    def wait_ddo(self, did: str, timeout: float = 30.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            response = self.http.get(f"/api/aquarius/assets/ddo/{did}")
            if response.status_code == 200:
                ddo: dict[str, Any] = response.json()
                return ddo
            time.sleep(0.2)
        raise ProviderClientError(f"{did} was not indexed within {timeout:.0f} s")

    def environments(self, chain_id: int) -> list[dict[str, Any]]:
        response = self._check(self.http.get("/api/services/computeEnvironments", params={"chainId": chain_id}))
        envs: list[dict[str, Any]] = response.json()[str(chain_id)]
        return envs

    def initialize_compute(
        self, consumer: str, env: str, valid_until: int, datasets: list[dict[str, Any]], algorithm: dict[str, Any]
    ) -> dict[str, Any]:
        body = {
            "datasets": datasets,
            "algorithm": algorithm,
            "compute": {"env": env, "validUntil": valid_until},
            "consumerAddress": consumer,
        }
        answer: dict[str, Any] = self._check(self.http.post("/api/services/initializeCompute", json=body)).json()
        return answer

    def start_compute(
        self, account: LocalAccount, env: str, dataset: dict[str, Any], algorithm: dict[str, Any]
    ) -> dict[str, Any]:
        body = {
            "dataset": dataset,
            "algorithm": algorithm,
            "environment": env,
            "consumerAddress": account.address,
            "additionalInputs": [],
            **self._signed(account, f"{account.address}{dataset['documentId']}"),
        }
        jobs: list[dict[str, Any]] = self._check(self.http.post("/api/services/compute", json=body)).json()
        return jobs[0]

    def status(self, consumer: str, job_id: str) -> dict[str, Any]:
        params = {"consumerAddress": consumer, "jobId": job_id}
        jobs: list[dict[str, Any]] = self._check(self.http.get("/api/services/compute", params=params)).json()
        return jobs[0]

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
