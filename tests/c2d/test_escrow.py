"""The Escrow client against the real contract on anvil: deposit, authorize, lock, claim, release, refusals."""

from __future__ import annotations

import secrets

import pytest

from c2d.chain.client import Chain
from c2d.chain.deploy import OceanAddresses
from c2d.chain.escrow import Authorization, Funds, Lock, check_payment, lock_id
from c2d.chain.signing import ZERO_ADDRESS
from c2d.exceptions import EscrowError, EscrowPaymentError
from c2d.settings import Settings
from tests.c2d.escrow_parties import OCEAN, Parties, funded_account, parties, wait_past


@pytest.fixture
def party(chain: Chain, addresses: OceanAddresses, settings: Settings) -> Parties:
    return parties(chain, addresses, settings)


def new_lock_id() -> int:
    return lock_id(secrets.token_hex(16))


def test_lock_id_is_ocean_nodes_sha256_of_the_job_id() -> None:
    # echo -n 0123456789abcdef0123456789abcdef | sha256sum
    expected = 0x3EB1BD439947EB762998E566CCC2E099C791118B2F40579CC4F7DA2B5061B7F9
    assert lock_id("0123456789abcdef0123456789abcdef") == expected
    assert lock_id("a") != lock_id("b")


def test_deposit_authorize_lock_and_claim_part_of_it(party: Parties, addresses: OceanAddresses) -> None:
    escrow, ocean, payer, node = party.escrow, party.ocean, party.payer, party.node
    escrow.deposit(payer, ocean, 10 * OCEAN)
    assert escrow.user_funds(payer.address, ocean) == Funds(available=10 * OCEAN, locked=0)
    assert party.ocean_balance(payer.address) == 90 * OCEAN

    escrow.authorize(payer, ocean, node.address, 5 * OCEAN, 3600, 2)
    assert escrow.authorizations(ocean, payer.address, node.address) == [
        Authorization(node.address, 5 * OCEAN, 0, 3600, 2, 0)
    ]
    assert check_payment(escrow, payer.address, ocean, node.address, 3 * OCEAN, 600).max_lock_counts == 2

    job_lock = new_lock_id()
    before = escrow.chain_time()
    lock_tx = escrow.create_lock(node, job_lock, ocean, payer.address, 3 * OCEAN, 600)
    assert lock_tx.startswith("0x") and len(lock_tx) == 66
    assert escrow.user_funds(payer.address, ocean) == Funds(7 * OCEAN, 3 * OCEAN)
    lock = escrow.find_lock(job_lock, ocean, payer.address, node.address)
    assert lock is not None and lock.amount == 3 * OCEAN and lock.payer == payer.address and lock.token == ocean
    assert before + 600 <= lock.expiry <= escrow.chain_time() + 600
    assert escrow.authorizations(ocean, payer.address, node.address)[0].current_locks == 1
    assert [e.kind for e in escrow.history(job_lock, payer.address, node.address)] == ["lock"]

    collector_before = party.ocean_balance(addresses.opf_community_fee_collector)
    claim_tx = escrow.claim_lock_and_withdraw(node, job_lock, ocean, payer.address, OCEAN, b'{"status":70}')
    # the payer gets back what was not claimed; the node gets the claim less the router's 0.1 % OPC fee
    assert escrow.user_funds(payer.address, ocean) == Funds(9 * OCEAN, 0)
    assert party.ocean_balance(node.address) == OCEAN - OCEAN // 1000
    assert party.ocean_balance(addresses.opf_community_fee_collector) - collector_before == OCEAN // 1000
    assert escrow.find_lock(job_lock, ocean, payer.address, node.address) is None
    assert escrow.authorizations(ocean, payer.address, node.address)[0].current_locks == 0
    [claimed] = escrow.settlement_events(claim_tx)
    assert (claimed.kind, claimed.lock_id, claimed.amount, claimed.payer) == ("claimed", job_lock, OCEAN, payer.address)
    assert [(e.kind, e.tx_hash) for e in escrow.history(job_lock, payer.address, node.address)] == [
        ("lock", lock_tx),
        ("claimed", claim_tx),
    ]

    with pytest.raises(EscrowError, match=r"claimLockAndWithdraw reverted: Lock not found \(the payee holds no") as err:
        escrow.claim_lock_and_withdraw(node, job_lock, ocean, payer.address, OCEAN, b"again")
    assert err.value.reason == "Lock not found"


def test_release_returns_an_unexpired_lock_at_once(party: Parties) -> None:
    escrow, ocean, payer, node = party.escrow, party.ocean, party.payer, party.node
    escrow.deposit(payer, ocean, 10 * OCEAN)
    escrow.authorize(payer, ocean, node.address, 10 * OCEAN, 3600, 5)
    job_lock = new_lock_id()
    escrow.create_lock(node, job_lock, ocean, payer.address, 4 * OCEAN, 3600)

    # cancelExpiredLock cannot: the lock runs for an hour (the contract would do nothing; refused before sending)
    with pytest.raises(EscrowError, match="cancels only expired locks") as err:
        escrow.cancel_expired_lock(node, job_lock, ocean, payer.address, node.address)
    assert err.value.reason == "Lock not expired"

    tx = escrow.release(node, job_lock, ocean, payer.address)
    assert escrow.user_funds(payer.address, ocean) == Funds(10 * OCEAN, 0)
    assert escrow.find_lock(job_lock, ocean, payer.address, node.address) is None
    assert party.ocean_balance(node.address) == 0
    [event] = escrow.settlement_events(tx)
    assert (event.kind, event.amount) == ("claimed", 0)
    with pytest.raises(EscrowError, match="holds no lock"):
        escrow.release(node, job_lock, ocean, payer.address)


def test_an_expired_lock_is_cancelled_by_anyone_and_release_uses_cancel(party: Parties) -> None:
    escrow, ocean, payer, node = party.escrow, party.ocean, party.payer, party.node
    escrow.deposit(payer, ocean, 10 * OCEAN)
    escrow.authorize(payer, ocean, node.address, 10 * OCEAN, 3600, 5)
    first, second = new_lock_id(), new_lock_id()
    escrow.create_lock(node, first, ocean, payer.address, 2 * OCEAN, 1)
    escrow.create_lock(node, second, ocean, payer.address, 3 * OCEAN, 1)
    lock = escrow.find_lock(first, ocean, payer.address, node.address)
    assert lock is not None
    wait_past(escrow.chain, lock.expiry + 1)

    tx = escrow.cancel_expired_lock(payer, first, ocean, payer.address, node.address)  # the payer itself
    [event] = escrow.settlement_events(tx)
    assert (event.kind, event.lock_id, event.amount) == ("canceled", first, 2 * OCEAN)
    assert escrow.user_funds(payer.address, ocean) == Funds(7 * OCEAN, 3 * OCEAN)

    tx = escrow.release(node, second, ocean, payer.address)
    assert [e.kind for e in escrow.settlement_events(tx)] == ["canceled"]
    assert escrow.user_funds(payer.address, ocean) == Funds(10 * OCEAN, 0)
    assert escrow.locks(ocean, payer.address, node.address) == []


def test_locks_filters_token_and_payer_exactly(
    party: Parties, chain: Chain, settings: Settings, addresses: OceanAddresses
) -> None:
    escrow, ocean, payer, node = party.escrow, party.ocean, party.payer, party.node
    other = funded_account(chain, settings, ocean, 10 * OCEAN)
    mine, theirs = new_lock_id(), new_lock_id()
    for account, job_lock in ((payer, mine), (other, theirs)):
        escrow.deposit(account, ocean, 5 * OCEAN)
        escrow.authorize(account, ocean, node.address, 5 * OCEAN, 3600, 5)
        escrow.create_lock(node, job_lock, ocean, account.address, OCEAN, 3600)

    # The contract ORs its filters: the token matches both locks, so it returns the other payer's too.
    raw = escrow.contract.functions.getLocks(ocean, payer.address, node.address).call()
    assert {int(row[0]) for row in raw} == {mine, theirs}
    assert [lock.lock_id for lock in escrow.locks(ocean, payer.address, node.address)] == [mine]
    assert {lock.lock_id for lock in escrow.locks(ZERO_ADDRESS, ZERO_ADDRESS, node.address)} == {mine, theirs}
    assert escrow.locks(addresses.dispenser, payer.address, node.address) == []  # another "token"
    assert isinstance(escrow.find_lock(theirs, ocean, other.address, node.address), Lock)


def test_the_contract_refusals_name_their_cause(party: Parties) -> None:
    escrow, ocean, payer, node = party.escrow, party.ocean, party.payer, party.node
    escrow.deposit(payer, ocean, 10 * OCEAN)
    escrow.authorize(payer, ocean, node.address, 5 * OCEAN, 3600, 5)
    job_lock = new_lock_id()
    with pytest.raises(EscrowError, match=r"Invalid amount \(a lock needs an amount above 0\)"):
        escrow.create_lock(node, job_lock, ocean, payer.address, 0, 600)
    escrow.create_lock(node, job_lock, ocean, payer.address, OCEAN, 600)
    with pytest.raises(EscrowError) as err:
        escrow.create_lock(node, job_lock, ocean, payer.address, OCEAN, 600)
    assert err.value.reason == "JobId already exists"
    with pytest.raises(EscrowError, match="Amount too high") as err:
        escrow.claim_lock_and_withdraw(node, job_lock, ocean, payer.address, 2 * OCEAN, b"")
    with pytest.raises(EscrowError, match="Payeer cannot be payee"):
        escrow.create_lock(payer, new_lock_id(), ocean, payer.address, OCEAN, 600)
    assert escrow.user_funds(payer.address, ocean) == Funds(9 * OCEAN, OCEAN)  # nothing else happened


def _refusal(party: Parties, amount: int, expiry: int, payee: str | None = None) -> tuple[str, str, str | None]:
    """check_payment's refusal and what the contract says to the same createLock."""
    escrow, payer, node = party.escrow, party.payer, party.node
    with pytest.raises(EscrowPaymentError) as refused:
        check_payment(escrow, payer.address, party.ocean, payee or node.address, amount, expiry)
    with pytest.raises(EscrowError) as reverted:
        escrow.create_lock(node, new_lock_id(), party.ocean, payer.address, amount, expiry)
    return refused.value.cause, str(refused.value), reverted.value.reason


def test_check_payment_refuses_each_cause_with_ocean_nodes_words(
    party: Parties, chain: Chain, settings: Settings
) -> None:
    escrow, ocean, payer, node = party.escrow, party.ocean, party.payer, party.node
    assert _refusal(party, OCEAN, 600) == (
        "funds",
        f"User {payer.address} does not have enough funds",
        "Payer does not have enough funds",
    )
    escrow.deposit(payer, ocean, 10 * OCEAN)
    assert _refusal(party, OCEAN, 600) == (
        "no_authorization",
        f"No escrow auths found for: chain={chain.chain_id}, token={ocean}, payer={payer.address}, "
        f"nodeAddress={node.address}. Found 0 authorizations.",
        "No auth found",
    )
    escrow.authorize(payer, ocean, node.address, 3 * OCEAN, 600, 1)
    escrow.authorize(payer, ocean, funded_account(chain, settings, ocean).address, OCEAN, 60, 1)
    with pytest.raises(EscrowPaymentError, match=r"nodeAddress=0x0+\. Found 2 authorizations\.") as err:
        check_payment(escrow, payer.address, ocean, ZERO_ADDRESS, OCEAN, 600)  # every payee's: the only way to 2
    assert err.value.cause == "several_authorizations"

    assert _refusal(party, 4 * OCEAN, 600) == (
        "max_locked_amount",
        "No valid escrow auths found(will go over limit)",
        "Exceeds maxLockedAmount",
    )
    assert _refusal(party, OCEAN, 601) == (
        "max_lock_seconds",
        "No valid escrow auths found(maxLockSeconds too low)",
        "Expiry too high",
    )
    escrow.create_lock(node, new_lock_id(), ocean, payer.address, OCEAN, 600)  # the one lock allowed
    assert _refusal(party, OCEAN, 600) == (
        "max_lock_counts",
        "No valid escrow auths found(too many active locks)",
        "Exceeds maxLockCounts",
    )
    # the limits count open locks: with 1 of 3 OCEAN locked, 3 more would exceed maxLockedAmount
    escrow.authorize(payer, ocean, node.address, 3 * OCEAN, 600, 5)
    assert _refusal(party, 3 * OCEAN, 600)[0] == "max_locked_amount"
    assert check_payment(escrow, payer.address, ocean, node.address, 2 * OCEAN, 600).current_locked_amount == OCEAN
