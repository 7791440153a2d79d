"""The status endpoint's fast path: ``GET /api/services/compute`` answered below FastAPI.

It is the endpoint clients poll (ocean.py every few seconds per job, dashboards constantly), so it
skips routing, dependency injection and the thread pool: a plain ASGI middleware reads the query,
takes the owner's statuses from :class:`StatusCache` (or, on a miss, from Postgres in a worker
thread, then keeps them until a change is announced), filters by job and dataset, and writes the
same JSON FastAPI would. Requests it does not fully understand (a missing or malformed address,
anything but GET) go to the FastAPI route, which answers them, errors included, as before.

A request that carries a ``signature`` (ocean.py signs its status requests) is verified as the route
verifies it (:func:`provider.auth.verify_job_request`: the signature recovered, then the nonce consumed
in Postgres) in a worker thread, and refused with the same 400; verified, it gets the signed status
objects (:func:`provider.status_object.status_object`). Unsigned requests skip all of it.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

import anyio
import anyio.to_thread
import psycopg
from starlette.types import ASGIApp, Receive, Scope, Send
from web3 import Web3

from provider.auth import verify_job_request
from provider.exceptions import ProviderError, error_response
from provider.services import Services
from provider.status_cache import Entry, StatusCache

PATH = "/api/services/compute"
_ANY_CASE = re.compile(r"^0x[0-9a-fA-F]{40}$")  # any case, as the route's required_address (web3) takes it


class StatusFastPath:
    def __init__(self, app: ASGIApp, services: Services, cache: StatusCache) -> None:
        self.app = app
        self.services = services
        self.cache = cache
        self.loading: dict[str, anyio.Event] = {}  # owner -> the read in flight (one per owner)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        owner = _one(query, "consumerAddress")
        job_id, did = _one(query, "jobId"), _one(query, "documentId")
        signature = _one(query, "signature")
        if not signature:
            if owner is None or not _ANY_CASE.match(owner):
                await self.app(scope, receive, send)  # FastAPI answers (and words) the errors
                return
        else:
            if owner is None or not _ANY_CASE.match(owner):
                await self.app(scope, receive, send)
                return
            try:
                verified = await anyio.to_thread.run_sync(
                    self._verify, owner, job_id, did, _one(query, "nonce"), signature
                )
            except ProviderError as exc:
                await error_response(exc)(scope, receive, send)
                return
            except (psycopg.OperationalError, psycopg.DataError):  # the database is away, or refuses the nonce:
                await self.app(scope, receive, send)  # the route answers it (503, 400), as it answers a stop
                return
            if not verified:  # a mixed-case address with a wrong checksum: the route words the error
                await self.app(scope, receive, send)
                return
        jobs = self.cache.get(owner)
        if jobs is None:
            try:
                jobs = await self._load(owner.lower())
            except psycopg.OperationalError:  # the database is away: the route answers it (503)
                await self.app(scope, receive, send)
                return
        found = [
            signed if signature else unsigned
            for record, unsigned, signed in jobs
            if (not job_id or record.job_id == job_id) and (not did or record.did == did or did in record.input_dids)
        ]
        body = b"[" + b",".join(found) + b"]"  # byte for byte what FastAPI's JSONResponse writes
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _load(self, owner: str) -> Entry:
        """The owner's jobs from Postgres; concurrent misses for one owner share a single read."""
        pending = self.loading.get(owner)
        if pending is not None:
            await pending.wait()
            cached = self.cache.get(owner)
            if cached is not None:
                return cached
        done = anyio.Event()
        self.loading[owner] = done
        try:
            return await anyio.to_thread.run_sync(self._read, owner)
        finally:
            self.loading.pop(owner, None)
            done.set()

    def _verify(self, owner: str, job_id: str | None, did: str | None, nonce: str | None, signature: str) -> bool:
        """Verify a signed request (in a worker thread); False when ``owner`` is not an address (its checksum)."""
        if not Web3.is_address(owner):
            return False
        verify_job_request(self.services.nonces, Web3.to_checksum_address(owner), job_id, did, nonce, signature)
        return True

    def _read(self, owner: str) -> Entry:
        self.cache.begin_fill(owner)
        return self.cache.fill(owner, self.services.jobs.find(owner))


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None
