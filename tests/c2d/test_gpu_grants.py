"""The GPU grants of the local engine against the real Postgres server: one job per device, whatever the
environment, under concurrency; the same devices again for the same job; release; an engine start's sweep.

Every test uses device indexes of its own (well above any real machine's), so they never meet another's."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Iterator

import psycopg
import pytest

from c2d.db import gpu_grants
from c2d.db.pool import Pool
from c2d.exceptions import C2DError, GpuBusyError
from c2d.stack.postgres import database_dsn
from c2d.stack.stack import Stack
from tests.helpers import race

_BASES = itertools.count(10_000, 100)


@pytest.fixture
def devices() -> list[int]:
    """Four device indexes no other test uses."""
    base = next(_BASES)
    return [base, base + 1, base + 2, base + 3]


@pytest.fixture
def conn(pool: Pool) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with pool.connection() as connection:
        yield connection


def _job() -> str:
    return "gpu-" + secrets.token_hex(8)


def test_concurrent_grants_never_hand_a_device_out_twice(stack: Stack, devices: list[int]) -> None:
    dsn = database_dsn(stack.settings)

    def one_job() -> list[int]:
        with psycopg.connect(dsn, autocommit=True) as own:
            return gpu_grants.grant(own, _job(), devices, 1)

    outcomes = race(8, one_job)
    granted = [o for o in outcomes if isinstance(o, list)]
    refused = [o for o in outcomes if not isinstance(o, list)]
    assert sorted(d for g in granted for d in g) == devices  # exactly 4, all distinct
    assert len(refused) == 4 and all(isinstance(o, GpuBusyError) for o in refused)
    assert isinstance(refused[0], C2DError) and "free now" in str(refused[0])


def test_the_same_job_gets_the_same_devices_again(
    conn: psycopg.Connection[tuple[object, ...]], devices: list[int]
) -> None:
    job = _job()
    first = gpu_grants.grant(conn, job, devices, 2)
    assert first == devices[:2]
    assert gpu_grants.grant(conn, job, devices, 2) == first  # a restart's resume
    other = gpu_grants.grant(conn, _job(), devices, 2)
    assert other == devices[2:]
    with pytest.raises(GpuBusyError):
        gpu_grants.grant(conn, _job(), devices, 1)
    gpu_grants.release(conn, _holder(conn, devices[2]))
    # the environment no longer lists device 0: the job keeps device 1, gives 0 back and takes 2
    assert gpu_grants.grant(conn, job, devices[1:], 2) == [devices[1], devices[2]]
    assert devices[0] not in gpu_grants.holders(conn)


def _holder(conn: psycopg.Connection[tuple[object, ...]], device: int) -> str:
    return gpu_grants.holders(conn)[device]


def test_a_busy_refusal_changes_nothing(conn: psycopg.Connection[tuple[object, ...]], devices: list[int]) -> None:
    holder, job = _job(), _job()
    gpu_grants.grant(conn, holder, devices[:1], 1)
    gpu_grants.grant(conn, job, devices[1:2], 1)
    with pytest.raises(GpuBusyError):  # it would drop its device 1 for two of devices 0..1, one is busy
        gpu_grants.grant(conn, job, devices[:2], 2)
    held = gpu_grants.holders(conn)
    assert (held[devices[0]], held[devices[1]]) == (holder, job)


def test_devices_are_host_wide_across_environments(
    conn: psycopg.Connection[tuple[object, ...]], devices: list[int]
) -> None:
    """Two environments that both declare a device: a job of the second does not get the one a job of the
    first holds."""
    first_env, second_env = devices[:2], devices[1:3]
    assert gpu_grants.grant(conn, _job(), first_env, 2) == devices[:2]
    assert gpu_grants.grant(conn, _job(), second_env, 1) == [devices[2]]


def test_release_gives_every_device_back(conn: psycopg.Connection[tuple[object, ...]], devices: list[int]) -> None:
    job = _job()
    gpu_grants.grant(conn, job, devices, 3)
    assert gpu_grants.release(conn, job) == devices[:3]
    assert gpu_grants.release(conn, job) == []
    assert not set(devices) & set(gpu_grants.holders(conn))
    assert gpu_grants.grant(conn, _job(), devices, 4) == devices


def test_zero_gpus_holds_none(conn: psycopg.Connection[tuple[object, ...]], devices: list[int]) -> None:
    job = _job()
    gpu_grants.grant(conn, job, devices, 2)
    assert gpu_grants.grant(conn, job, devices, 0) == []
    assert gpu_grants.release(conn, job) == []
    with pytest.raises(ValueError):
        gpu_grants.grant(conn, job, devices, 5)


def test_an_engine_start_drops_the_grants_of_jobs_it_does_not_resume(
    conn: psycopg.Connection[tuple[object, ...]], devices: list[int]
) -> None:
    resumed, gone = _job(), _job()
    gpu_grants.grant(conn, resumed, devices, 1)
    gpu_grants.grant(conn, gone, devices, 2)
    dropped = gpu_grants.release_all_but(conn, [resumed])  # (the other tests' grants too)
    assert {d: j for d, j in dropped.items() if d in devices} == {devices[1]: gone, devices[2]: gone}
    assert gpu_grants.holders(conn) == {devices[0]: resumed}
    assert gpu_grants.grant(conn, resumed, devices, 1) == [devices[0]]
    gpu_grants.release_all_but(conn, [])
    assert gpu_grants.holders(conn) == {}
