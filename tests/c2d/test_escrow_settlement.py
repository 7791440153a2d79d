"""Lock records in Postgres and their settlement on the real Escrow: after a restart, expired, in parallel."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import replace

import pytest
from hexbytes import HexBytes
from web3.logs import DISCARD

from c2d.chain.artifacts import Artifacts
from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.chain.escrow import Escrow, Funds, lock_id
from c2d.db.escrow_locks import EscrowLockStore, LockIntent
from c2d.db.jobs import JobRecord, JobStore, NewJob
from c2d.db.pool import Pool, database_dsn_of, open_pool
from c2d.escrow_settlement import SettlementReport, job_proof, settle
from c2d.exceptions import DatabaseError
from c2d.settings import Settings
from c2d.status import JobStatus
from tests.c2d.escrow_parties import OCEAN, Parties, parties, wait_past
from tests.helpers import race

COST = 2 * OCEAN  # what a job that finished (70) costs here; any other end costs nothing
FEE = COST // 1000  # the router's OPC fee on OCEAN claims


def cost_of(job: JobRecord) -> int:
    return COST if job.status == JobStatus.JOB_FINISHED else 0


@pytest.fixture
def party(chain: Chain, addresses: OceanAddresses, settings: Settings) -> Parties:
    funded = parties(chain, addresses, settings)
    funded.escrow.deposit(funded.payer, funded.ocean, 50 * OCEAN)
    funded.escrow.authorize(funded.payer, funded.ocean, funded.node.address, 50 * OCEAN, 3600, 20)
    return funded


class Node:
    """What a node process holds: its pool, stores and Escrow client (a new one = a restarted node)."""

    def __init__(self, dsn: str, settings: Settings, escrow_address: str) -> None:
        self.pool: Pool = open_pool(dsn, max_size=4, name="escrow-test")
        self.locks = EscrowLockStore(self.pool)
        self.jobs = JobStore(self.pool)
        self.escrow = Escrow(Chain(settings.rpc_url, Artifacts(settings.npm_dir)), escrow_address)
        self.lock_txs: dict[str, str] = {}  # job id -> createLock transaction sent

    def intent(self, party: Parties, job_id: str, amount: int, expiry: int = 3600) -> LockIntent:
        return LockIntent(
            job_id=job_id,
            chain_id=self.escrow.chain.chain_id,
            escrow=self.escrow.address,
            token=party.ocean,
            payer=party.payer.address,
            payee=party.node.address,
            lock_id=lock_id(job_id),
            amount_wei=amount,
            expiry_seconds=expiry,
            from_block=int(self.escrow.chain.w3.eth.block_number),
        )

    def start_paid_job(self, party: Parties, amount: int, *, expiry: int = 3600, crash: str | None = None) -> str:
        """The start flow: intent, lock, 'locked', job row. ``crash``: "before_send" (the intent only),
        "before_mark" (the lock landed, the row still says 'locking'), "before_job" (no job row)."""
        job_id = secrets.token_hex(16)
        self.locks.record_intent(self.intent(party, job_id, amount, expiry))
        if crash == "before_send":
            return job_id
        tx = self.escrow.create_lock(party.node, lock_id(job_id), party.ocean, party.payer.address, amount, expiry)
        self.lock_txs[job_id] = tx
        if crash == "before_mark":
            return job_id
        self.locks.mark_locked(job_id, tx)
        if crash != "before_job":
            self.jobs.create(NewJob(job_id=job_id, owner=party.payer.address, environment="env", engine="escrow-test"))
        return job_id

    def end_job(self, job_id: str, status: JobStatus) -> None:
        if self.jobs.get(job_id) is None:
            self.jobs.create(NewJob(job_id=job_id, owner="0x" + "11" * 20, environment="env", engine="escrow-test"))
        self.jobs.transition(job_id, status, source="test", finished=True, results=[])

    def settle(self, party: Parties, **kwargs: float) -> SettlementReport:
        return settle(self.locks, self.escrow, party.node, self.jobs, cost_of, grace_seconds=0, **kwargs)  # type: ignore[arg-type]

    def close(self) -> None:
        self.pool.close()


@pytest.fixture
def node_factory(pool: Pool, settings: Settings, addresses: OceanAddresses) -> Iterator[Callable[[], Node]]:
    """Starts a node (each call: a fresh one, as after a restart); closes them all at the end."""
    started: list[Node] = []
    assert addresses.escrow is not None
    escrow_address = addresses.escrow

    def start() -> Node:
        started.append(Node(database_dsn_of(pool), settings, escrow_address))
        return started[-1]

    yield start
    for node in started:
        node.close()


def test_store_records_the_intent_and_guards_each_transition(party: Parties, node_factory: Callable[[], Node]) -> None:
    node = node_factory()
    job_id = secrets.token_hex(16)
    intent = node.intent(party, job_id, 3 * OCEAN)
    row = node.locks.record_intent(intent)
    assert (row.state, row.amount_wei, row.lock_id, row.lock_tx) == ("locking", 3 * OCEAN, lock_id(job_id), None)
    with pytest.raises(DatabaseError, match="already has an escrow lock"):
        node.locks.record_intent(intent)
    widest = node.locks.record_intent(replace(intent, job_id=secrets.token_hex(16), lock_id=2**256 - 1))
    assert widest.lock_id == 2**256 - 1  # a uint256 survives numeric(78)
    tx = "0x" + "AB" * 32
    locked = node.locks.mark_locked(job_id, tx)
    assert (locked.state, locked.lock_tx) == ("locked", tx.lower())
    assert node.locks.mark_locked(job_id, tx) == locked  # a replay changes nothing
    with pytest.raises(DatabaseError, match="is locked; it cannot become failed"):
        node.locks.mark_failed(job_id, "late")
    claimed = node.locks.mark_claimed(job_id, "0x" + "cd" * 32, OCEAN)
    assert (claimed.state, claimed.cost_wei, claimed.settled) == ("claimed", OCEAN, True)
    with pytest.raises(DatabaseError, match="is claimed; it cannot become released"):
        node.locks.mark_released(job_id, "0x" + "ef" * 32)
    assert node.locks.get(job_id) == claimed and job_id not in {r.job_id for r in node.locks.unsettled()}
    with pytest.raises(DatabaseError, match="has no escrow lock"):
        node.locks.mark_locked(secrets.token_hex(16), None)

    with node.locks.exclusive(job_id) as first:
        assert first
        assert race(1, lambda: _held(node.locks, job_id)) == [False]  # another connection (thread) is refused
    assert _held(node.locks, job_id)


def _held(locks: EscrowLockStore, job_id: str) -> bool:
    with locks.exclusive(job_id) as held:
        return held


def test_settlement_after_a_restart_claims_releases_and_repairs(
    party: Parties, node_factory: Callable[[], Node]
) -> None:
    escrow, ocean, payer = party.escrow, party.ocean, party.payer.address
    before = node_factory()
    landed = before.start_paid_job(party, 5 * OCEAN, crash="before_mark")  # died between receipt and record
    before.end_job(landed, JobStatus.JOB_FINISHED)
    finished = before.start_paid_job(party, 5 * OCEAN)
    before.end_job(finished, JobStatus.JOB_FINISHED)
    early_failure = before.start_paid_job(party, 5 * OCEAN)
    before.end_job(early_failure, JobStatus.DATA_PROVISIONING_FAILED)  # before the algorithm ran: costs nothing
    never_sent = before.start_paid_job(party, 5 * OCEAN, crash="before_send")
    no_job = before.start_paid_job(party, 5 * OCEAN, crash="before_job")
    running = before.start_paid_job(party, 5 * OCEAN)
    assert escrow.user_funds(payer, ocean) == Funds(25 * OCEAN, 25 * OCEAN)
    before.close()

    after = node_factory()  # a fresh pool, stores and client on the same database
    assert [r.state for r in map(after.locks.get, (landed, never_sent))] == ["locking", "locking"]  # type: ignore[union-attr]
    report = after.settle(party)

    assert report.locked == [landed] and report.failed == [never_sent]
    assert sorted(report.claimed) == sorted([landed, finished])
    assert sorted(report.released) == sorted([early_failure, no_job])
    assert report.pending == [running] and not report.errors and not report.orphans_canceled
    # on chain: two jobs paid 2 OCEAN each out of their 5, everything else back but the running job's lock
    assert escrow.user_funds(payer, ocean) == Funds(45 * OCEAN - 2 * COST, 5 * OCEAN)
    assert party.ocean_balance(party.node.address) == 2 * (COST - FEE)
    assert [lock.lock_id for lock in escrow.locks(ocean, payer, party.node.address)] == [lock_id(running)]

    rows = {job_id: after.locks.get(job_id) for job_id in (landed, finished, early_failure, never_sent, no_job)}
    assert {job_id: row.state for job_id, row in rows.items() if row} == {
        landed: "claimed",
        finished: "claimed",
        early_failure: "released",
        never_sent: "failed",
        no_job: "released",
    }
    landed_row = rows[landed]
    assert landed_row is not None and landed_row.lock_tx == before.lock_txs[landed]  # found from the Lock event
    assert landed_row.cost_wei == COST and landed_row.claim_tx is not None
    # the proof is the job's public status (what the Claimed event carries)
    claimed = escrow.contract.events.Claimed().process_receipt(
        escrow.chain.w3.eth.get_transaction_receipt(HexBytes(landed_row.claim_tx)), errors=DISCARD
    )
    job = after.jobs.get(landed)
    assert job is not None and claimed[0]["args"]["proof"] == job_proof(job)
    assert json.loads(job_proof(job))["status"] == 70

    again = after.settle(party)  # idempotent: nothing more happens
    assert again == SettlementReport(pending=[running])
    assert escrow.user_funds(payer, ocean) == Funds(45 * OCEAN - 2 * COST, 5 * OCEAN)
    assert party.ocean_balance(party.node.address) == 2 * (COST - FEE)


def test_an_expired_lock_is_cancelled_and_orphans_are_swept(party: Parties, node_factory: Callable[[], Node]) -> None:
    escrow, ocean, payer = party.escrow, party.ocean, party.payer.address
    node = node_factory()
    late = node.start_paid_job(party, 4 * OCEAN, expiry=1)
    node.end_job(late, JobStatus.JOB_FINISHED)
    orphan = lock_id(secrets.token_hex(16))  # a lock the database knows nothing of
    escrow.create_lock(party.node, orphan, ocean, payer, 3 * OCEAN, 1)
    lock = escrow.find_lock(orphan, ocean, payer, party.node.address)
    assert lock is not None
    wait_past(escrow.chain, lock.expiry + 1)

    report = node.settle(party)
    assert report.released == [late] and report.orphans_canceled == [orphan] and not report.claimed
    row = node.locks.get(late)
    assert row is not None and row.state == "released" and row.reason == "the lock had expired"
    assert escrow.user_funds(payer, ocean) == Funds(50 * OCEAN, 0)  # too late to be paid: all back
    assert party.ocean_balance(party.node.address) == 0


def test_two_settlers_at_once_claim_each_lock_once(party: Parties, node_factory: Callable[[], Node]) -> None:
    escrow, ocean, payer = party.escrow, party.ocean, party.payer.address
    node = node_factory()
    job_ids = [node.start_paid_job(party, 3 * OCEAN) for _ in range(6)]
    for job_id in job_ids:
        node.end_job(job_id, JobStatus.JOB_FINISHED)

    # one Escrow client (one wallet sends with one nonce sequence), two settlers on their own connections
    reports = race(2, lambda: node.settle(party, sweep=False))
    assert all(isinstance(report, SettlementReport) and not report.errors for report in reports), reports
    claimed = [job for report in reports if isinstance(report, SettlementReport) for job in report.claimed]
    assert sorted(claimed) == sorted(job_ids)  # each once, by one of them
    for job_id in job_ids:
        events = escrow.history(lock_id(job_id), payer, party.node.address)
        assert [e.kind for e in events] == ["lock", "claimed"]
    assert party.ocean_balance(party.node.address) == 6 * (COST - FEE)
    assert escrow.user_funds(payer, ocean) == Funds(50 * OCEAN - 6 * COST, 0)
