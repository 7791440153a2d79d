"""Jobs, events, used orders and nonces against the real Postgres server."""

from __future__ import annotations

import itertools
import secrets
from decimal import Decimal

import pytest

from c2d.db.job_records import ResultEntry
from c2d.db.jobs import JobStore, NewJob, UsedOrder
from c2d.db.nonces import NonceStore
from c2d.db.pool import Pool
from c2d.exceptions import NonceError, OrderAlreadyUsedError
from c2d.status import JobStatus
from tests.helpers import race


def new_job(**kwargs: object) -> NewJob:
    values: dict[str, object] = {
        "job_id": secrets.token_hex(16),
        "owner": "0x" + secrets.token_hex(20),
        "environment": "env-1",
        "engine": "local",
        "did": "did:op:" + secrets.token_hex(32),
    }
    values.update(kwargs)
    return NewJob(**values)  # type: ignore[arg-type]


def random_tx() -> str:
    return "0x" + secrets.token_hex(32)


def test_an_order_starts_at_most_one_job_under_concurrent_inserts(pool: Pool) -> None:
    store = JobStore(pool)
    for _ in range(20):
        order = UsedOrder(8996, random_tx())
        outcomes = race(2, lambda order=order: store.create(new_job(), [order]))  # type: ignore[misc]
        created = [o for o in outcomes if not isinstance(o, BaseException)]
        refused = [o for o in outcomes if isinstance(o, OrderAlreadyUsedError)]
        assert len(created) == 1 and len(refused) == 1, outcomes
        assert store.order_used(8996, order.tx_hash.upper().replace("0X", "0x"))


def test_a_refused_order_leaves_no_job_behind(pool: Pool) -> None:
    store = JobStore(pool)
    order = UsedOrder(8996, random_tx())
    store.create(new_job(), [order])
    loser = new_job()
    with pytest.raises(OrderAlreadyUsedError, match="already used"):
        store.create(loser, [UsedOrder(8996, random_tx()), order])
    assert store.get(loser.job_id) is None


def test_transitions_write_one_event_each_and_replays_change_nothing(pool: Pool) -> None:
    store = JobStore(pool)
    job = store.create(new_job())
    assert job.status == JobStatus.WARMING_UP and job.status_text == "Warming up"
    assert store.transition(job.job_id, JobStatus.CONFIGURING_VOLUMES, source="test")
    assert not store.transition(job.job_id, JobStatus.CONFIGURING_VOLUMES, source="test")  # replay
    assert store.transition(job.job_id, JobStatus.RUNNING_ALGORITHM, source="test")
    results: list[ResultEntry] = [{"filename": "out.txt", "filesize": 3, "type": "output"}]
    assert store.transition(job.job_id, JobStatus.JOB_FINISHED, source="test", finished=True, results=results)
    # A finished job is final: a late or replayed event cannot move it back.
    assert not store.transition(job.job_id, JobStatus.RUNNING_ALGORITHM, source="late")
    final = store.get(job.job_id)
    assert final is not None and final.finished and final.status == 70 and final.results == results
    events = store.events(job.job_id)
    assert [(e.old_status, e.status) for e in events] == [(None, 1), (1, 20), (20, 40), (40, 70)]
    assert events[2].status_text == "Running algorithm "
    assert all(a.at <= b.at for a, b in itertools.pairwise(events))


def test_mirror_merges_details_and_writes_an_event_only_on_a_change(pool: Pool) -> None:
    store = JobStore(pool)
    job = store.create(new_job())
    store.advance(job.job_id, [(20, "Configuring volumes")], {"steps": {"a": 1}}, "test")
    store.advance(job.job_id, [(20, "Configuring volumes")], {"steps": {"a": 2}}, "test")  # same status: no event
    store.advance(job.job_id, [(30, "Provisioning success")], {"other": True}, "test")
    record = store.get(job.job_id)
    assert record is not None and (record.status, record.details) == (30, {"steps": {"a": 2}, "other": True})
    assert [(e.old_status, e.status) for e in store.events(job.job_id)] == [(None, 1), (1, 20), (20, 30)]
    store.transition(job.job_id, 70, source="test", finished=True)
    store.advance(job.job_id, [(40, "Running algorithm ")], {"late": True}, "test")  # final is final
    record = store.get(job.job_id)
    assert record is not None and record.status == 70 and "late" not in record.details
    assert len(store.events(job.job_id)) == 4


def test_mirror_of_several_statuses_writes_each_change_in_order(pool: Pool) -> None:
    store = JobStore(pool)
    job = store.create(new_job())
    store.advance(job.job_id, [(20, "Configuring volumes")], {}, "test")
    chain = [(20, "Configuring volumes"), (30, "Provisioning success"), (30, "Provisioning success"), (40, "Running")]
    store.advance(job.job_id, chain, {"steps": {"b": 1}}, "test")
    store.advance(job.job_id, [(40, "Running"), (41, "Algorithm failed: x"), (41, "Algorithm failed: y")], {}, "test")
    record = store.get(job.job_id)
    assert record is not None and (record.status, record.status_text) == (41, "Algorithm failed: y")
    events = [(e.old_status, e.status, e.status_text) for e in store.events(job.job_id)][1:]
    assert events == [
        (1, 20, "Configuring volumes"),
        (20, 30, "Provisioning success"),
        (30, 40, "Running"),
        (40, 41, "Algorithm failed: x"),
        (41, 41, "Algorithm failed: y"),
    ]


def test_final_transition_writes_the_statuses_it_went_through_first(pool: Pool) -> None:
    store = JobStore(pool)
    job = store.create(new_job())
    store.advance(job.job_id, [(40, "Running")], {}, "test")
    went_through = [(40, "Running"), (60, "Publishing results"), (62, "Results upload failed: x")]
    assert store.transition(
        job.job_id, 62, source="test", text="Results upload failed: x", finished=True, went_through=went_through
    )
    events = [(e.old_status, e.status, e.status_text) for e in store.events(job.job_id)][2:]
    assert events == [
        (40, 60, "Publishing results"),
        (60, 62, "Results upload failed: x"),
        (62, 62, "Results upload failed: x"),  # the final event is always written
    ]
    record = store.get(job.job_id)
    assert record is not None and record.finished and (record.status, len(events)) == (62, 3)
    # A finished job is final: nothing of a late chain is written either
    assert not store.transition(job.job_id, 70, source="late", finished=True, went_through=[(40, "Running")])
    assert len(store.events(job.job_id)) == 5


def test_find_is_case_insensitive_on_owner_and_filters_by_job_and_did(pool: Pool) -> None:
    store = JobStore(pool)
    owner = "0xAbCdEf" + secrets.token_hex(17)
    first, second = store.create(new_job(owner=owner)), store.create(new_job(owner=owner))
    assert [j.job_id for j in store.find(owner.lower())] == [first.job_id, second.job_id]
    assert [j.job_id for j in store.find(owner.upper().replace("0X", "0x"), job_id=second.job_id)] == [second.job_id]
    assert [j.job_id for j in store.find(owner, did=first.did)] == [first.job_id]
    assert store.find("0x" + secrets.token_hex(20)) == []


def test_stop_request_only_flags_unfinished_jobs(pool: Pool) -> None:
    store = JobStore(pool)
    job = store.create(new_job())
    assert store.request_stop(job.job_id, 1)
    assert not store.request_stop(job.job_id, 1)
    done = store.create(new_job())
    store.transition(done.job_id, JobStatus.JOB_FINISHED, source="test", finished=True)
    assert not store.request_stop(done.job_id, 1)


def test_nonces_are_numeric_strictly_increasing_and_case_insensitive(pool: Pool) -> None:
    nonces = NonceStore(pool)
    address = "0x" + secrets.token_hex(20)
    assert nonces.current(address) is None
    nonces.accept(address, "999")
    nonces.accept(address.upper().replace("0X", "0x"), "1700000000000.5")  # numeric, not lexicographic
    assert nonces.current(address) == Decimal("1700000000000.5")
    with pytest.raises(NonceError, match="not greater"):
        nonces.accept(address, "1700000000000.5")  # replay
    with pytest.raises(NonceError, match="not greater"):
        nonces.accept(address, 1000)
    for bad in ("abc", "-1", "NaN", "Infinity"):
        with pytest.raises(NonceError):
            nonces.accept(address, bad)


def test_the_same_nonce_sent_twice_concurrently_is_accepted_once(pool: Pool) -> None:
    nonces = NonceStore(pool)
    address = "0x" + secrets.token_hex(20)
    outcomes = race(4, lambda: nonces.accept(address, 42))
    assert sorted(type(o).__name__ for o in outcomes) == ["Decimal", "NonceError", "NonceError", "NonceError"]
