"""A typed client of Ocean's Escrow contract (contracts 2.6.0; the ABI ocean.js 8.6.2 calls), node and payer side.

How ocean.js pays a compute job: the consumer (payer) ``deposit``s tokens and ``authorize``s the node's wallet
(payee) with limits; at job start the node sends ``createLock(lock_id(job_id), token, payer, amount, expiry)``;
when the job ends it claims the real cost (``claimLockAndWithdraw``, the rest goes back to the payer) or releases
the lock. Reverts raise :class:`EscrowError` with the contract's reason and what it means.

Two things of Escrow.sol a caller must know:

* ``getLocks(token, payer, payee)`` ORs its two filters (a lock matches when its token OR its payer matches), so
  :meth:`Escrow.locks` filters again here, exactly.
* ``cancelExpiredLock`` matches only locks with ``expiry < block.timestamp`` and does nothing (no revert) before;
  ``claimLock*`` of an expired lock cancels it instead of claiming (no revert either). :meth:`Escrow.release`
  and :meth:`Escrow.settlement_events` deal with both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, Web3Exception
from web3.logs import DISCARD

from c2d.chain.client import Chain
from c2d.chain.signing import ZERO_ADDRESS
from c2d.exceptions import ChainError, EscrowError, EscrowPaymentError

# What each revert string of Escrow.sol means, for the error message.
REVERT_MEANINGS: dict[str, str] = {
    "Payer does not have enough funds": "the payer's available Escrow funds are below the amount",
    "No auth found": "the payer has not authorized this payee for the token",
    "Expiry too high": "the lock would last longer than the authorization's maxLockSeconds",
    "Exceeds maxLockedAmount": "the payee's locks would exceed the authorization's maxLockedAmount",
    "Exceeds maxLockCounts": "the payee already holds the authorization's maxLockCounts locks",
    "JobId already exists": "this payee already holds a lock with this id for this payer",
    "Lock not found": "the payee holds no lock with this id, token and payer",
    "Amount too high": "the claim is larger than the locked amount",
    "Payeer cannot be payee": "the payer cannot lock its own funds",
    "Invalid amount": "a lock needs an amount above 0",
    "Invalid jobId": "a lock id must be above 0",
    "Invalid payer": "the payer is the zero address",
    "Invalid payee": "the payee is the zero address",
    "Invalid token": "the token is the zero address",
}


def lock_id(job_id: str) -> int:
    """The lock's ``jobId`` on chain for one of our jobs: uint256 of sha256(UTF-8 of the job id), exactly as
    ocean-node computes it (``create256Hash(jobId)`` in core/utils/escrow.ts and compute_engine_docker.ts)."""
    return int.from_bytes(hashlib.sha256(job_id.encode()).digest(), "big")


class Funds(NamedTuple):
    """A payer's balance of one token in the Escrow: free to lock or withdraw, and held by locks."""

    available: int
    locked: int


@dataclass(frozen=True)
class Authorization:
    """What a payer allows one payee for one token. ``max_locked_amount`` bounds the sum of the payee's open
    locks (not one lock), ``max_lock_seconds`` each lock's duration, ``max_lock_counts`` their number."""

    payee: str
    max_locked_amount: int
    current_locked_amount: int
    max_lock_seconds: int
    max_lock_counts: int
    current_locks: int


@dataclass(frozen=True)
class Lock:
    """An open lock; ``expiry`` is absolute (unix seconds: the block's timestamp + the seconds asked)."""

    lock_id: int
    payer: str
    amount: int
    expiry: int
    token: str

    def expired(self, at: int) -> bool:
        """Whether the contract treats the lock as expired in a block with timestamp ``at``."""
        return self.expiry < at


@dataclass(frozen=True)
class LockEvent:
    """A Lock, Claimed or Canceled event of one lock. ``amount``: locked, claimed (gross, before the OPC fee;
    the payer got the rest back) or returned to the payer."""

    kind: Literal["lock", "claimed", "canceled"]
    lock_id: int
    payer: str
    token: str
    amount: int
    tx_hash: str
    block: int
    log_index: int


class Escrow:
    """The Escrow contract at ``address`` on ``chain``. Addresses may be given in any case."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.address = Web3.to_checksum_address(address)
        self.contract = chain.contract("Escrow", self.address)

    # --- reads -------------------------------------------------------------------------------------------
    def user_funds(self, payer: str, token: str) -> Funds:
        available, locked = self._read("getUserFunds", _address(payer), _address(token))
        return Funds(int(available), int(locked))

    def authorizations(self, token: str, payer: str, payee: str) -> list[Authorization]:
        """The payer's authorizations for ``token``; ``payee`` the zero address: every payee's."""
        rows = self._read("getAuthorizations", _address(token), _address(payer), _address(payee))
        return [Authorization(str(row[0]), *(int(value) for value in row[1:])) for row in rows]

    def locks(self, token: str, payer: str, payee: str) -> list[Lock]:
        """The payee's open locks, of ``token`` and ``payer`` (either the zero address: any)."""
        rows = self._read("getLocks", _address(token), _address(payer), _address(payee))
        found = [Lock(int(row[0]), str(row[1]), int(row[2]), int(row[3]), str(row[4])) for row in rows]
        return [
            lock
            for lock in found
            if _matches(token, lock.token) and _matches(payer, lock.payer)  # the contract ORs the filters
        ]

    def find_lock(self, lock_id: int, token: str, payer: str, payee: str) -> Lock | None:
        """The payee's open lock ``lock_id`` of ``payer`` in ``token``, None when there is none (never made,
        claimed or cancelled)."""
        return next((lock for lock in self.locks(token, payer, payee) if lock.lock_id == lock_id), None)

    def chain_time(self) -> int:
        """The latest block's timestamp: a lock with ``expiry`` below it is expired for every later block."""
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    # --- payee (the node) --------------------------------------------------------------------------------
    def create_lock(
        self, account: LocalAccount, lock_id: int, token: str, payer: str, amount_wei: int, expiry_seconds: int
    ) -> str:
        """Lock ``amount_wei`` of the payer's available funds for ``account`` (the payee) for ``expiry_seconds``
        from the block it lands in; the transaction hash. Refusals (funds, authorization limits, an id already
        locked) raise :class:`EscrowError` with ``reason`` set before anything is sent: no lock exists. Any other
        :class:`ChainError` (no receipt in time, a failed receipt) leaves the outcome to be read on chain
        (:meth:`find_lock`). :func:`check_payment` tells the same refusals apart with ocean-node's messages."""
        call = self.contract.functions.createLock(lock_id, _address(token), _address(payer), amount_wei, expiry_seconds)
        return self._send(account, call, "createLock")

    def claim_lock_and_withdraw(
        self, account: LocalAccount, lock_id: int, token: str, payer: str, amount_wei: int, proof: bytes
    ) -> str:
        """Take ``amount_wei`` (at most the locked amount; the OPC fee of the router, 0.1 % for OCEAN, goes to the
        collector) and withdraw it to ``account``; the rest goes back to the payer's available funds; the
        transaction hash. ``proof`` is stored in the Claimed event (ocean-node: the job's JSON). An expired lock
        is cancelled instead of claimed, without a revert: :meth:`settlement_events` of the hash tells which."""
        call = self.contract.functions.claimLockAndWithdraw(
            lock_id, _address(token), _address(payer), amount_wei, bytes(proof)
        )
        return self._send(account, call, "claimLockAndWithdraw")

    def cancel_expired_lock(self, account: LocalAccount, lock_id: int, token: str, payer: str, payee: str) -> str:
        """Give an expired lock back to its payer (anyone may send it); the transaction hash. The contract does
        nothing for a lock that is absent or not expired yet, so those raise :class:`EscrowError` here first
        (nothing is sent)."""
        lock = self.find_lock(lock_id, token, payer, payee)
        if lock is None:
            raise EscrowError(f"cancelExpiredLock: {payee} holds no lock {lock_id:#x} of {payer}", "Lock not found")
        now = self.chain_time()
        if not lock.expired(now):
            raise EscrowError(
                f"cancelExpiredLock: lock {lock_id:#x} expires at {lock.expiry}, the chain is at {now}; "
                "the contract cancels only expired locks (release() returns it earlier)",
                "Lock not expired",
            )
        call = self.contract.functions.cancelExpiredLock(lock_id, _address(token), _address(payer), _address(payee))
        return self._send(account, call, "cancelExpiredLock")

    def release(self, account: LocalAccount, lock_id: int, token: str, payer: str, proof: bytes = b"") -> str:
        """Give the whole lock back to the payer's available funds, as early as the contract allows; the
        transaction hash. ``account`` is the payee.

        The contract's rule (Escrow.sol 2.6.0, unchanged to 2.8.0): there is no release call.
        ``cancelExpiredLock`` (anyone) frees only locks whose ``expiry < block.timestamp``; before that it does
        nothing. But the payee may claim any amount up to the lock's, 0 included, at any time: ``_claimLock``
        credits the payer with ``lock.amount - amount``, deletes the lock and emits ``Claimed`` with amount 0
        (no fee on 0). So an unexpired lock is released with ``claimLockAndWithdraw(amount 0)`` at once, and an
        expired one with ``cancelExpiredLock`` (a claim would cancel it too). ocean-node releases zero-cost jobs
        with ``cancelExpiredLock`` only, i.e. the payer's funds stay locked until the lock expires."""
        lock = self.find_lock(lock_id, token, payer, account.address)
        if lock is None:
            raise EscrowError(f"release: {account.address} holds no lock {lock_id:#x} of {payer}", "Lock not found")
        if lock.expired(self.chain_time()):
            return self.cancel_expired_lock(account, lock_id, token, payer, account.address)
        return self.claim_lock_and_withdraw(account, lock_id, token, payer, 0, proof)

    # --- payer (the consumer: tests, the demo) -----------------------------------------------------------
    def deposit(self, account: LocalAccount, token: str, amount_wei: int) -> str:
        """Approve the Escrow for ``amount_wei`` of ``token`` and deposit it; the deposit's transaction hash."""
        erc20 = self.chain.contract("ERC20Template", _address(token))
        self.chain.transact(account, erc20.functions.approve(self.address, amount_wei), "approve")
        return self._send(account, self.contract.functions.deposit(_address(token), amount_wei), "deposit")

    def authorize(
        self,
        account: LocalAccount,
        token: str,
        payee: str,
        max_locked_amount: int,
        max_lock_seconds: int,
        max_lock_counts: int,
    ) -> str:
        """Set (or replace: one per payee and token) what ``payee`` may lock of ``account``'s funds."""
        call = self.contract.functions.authorize(
            _address(token), _address(payee), max_locked_amount, max_lock_seconds, max_lock_counts
        )
        return self._send(account, call, "authorize")

    # --- what happened to a lock -------------------------------------------------------------------------
    def settlement_events(self, tx_hash: str) -> list[LockEvent]:
        """The Claimed and Canceled events in a transaction's receipt (a claim may have cancelled instead)."""
        receipt = self.chain.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        mine = [log for log in receipt["logs"] if str(log["address"]) == self.address]
        found = [
            _event("claimed", log)
            for log in self.contract.events.Claimed().process_receipt({**receipt, "logs": mine}, errors=DISCARD)
        ] + [
            _event("canceled", log)
            for log in self.contract.events.Canceled().process_receipt({**receipt, "logs": mine}, errors=DISCARD)
        ]
        return sorted(found, key=lambda e: (e.block, e.log_index))

    def history(self, lock_id: int, payer: str, payee: str, from_block: int = 0) -> list[LockEvent]:
        """Every Lock, Claimed and Canceled event of the payee's lock ``lock_id`` of ``payer`` since
        ``from_block``, in chain order: where a lock's transactions are when no one kept their hashes."""
        payer, payee = _address(payer), _address(payee)
        try:
            locks = self.contract.events.Lock().get_logs(from_block=from_block)  # no indexed arguments
            claimed = self.contract.events.Claimed().get_logs(
                from_block=from_block, argument_filters={"payee": payee, "payer": payer}
            )
            canceled = self.contract.events.Canceled().get_logs(
                from_block=from_block, argument_filters={"payee": payee, "payer": payer}
            )
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainError(f"reading Escrow events failed: {exc}") from exc
        found = [_event("lock", log) for log in locks if log["args"]["payee"] == payee]
        found += [_event("claimed", log) for log in claimed] + [_event("canceled", log) for log in canceled]
        mine = [e for e in found if e.lock_id == lock_id and e.payer == payer]
        return sorted(mine, key=lambda e: (e.block, e.log_index))

    # --- plumbing ----------------------------------------------------------------------------------------
    def _read(self, function: str, *args: Any) -> Any:
        try:
            return getattr(self.contract.functions, function)(*args).call()
        except ContractLogicError as exc:
            reason = revert_reason(exc)
            raise EscrowError(f"{function} reverted: {_explain(reason)}", reason) from exc
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainError(f"{function} failed: {exc}") from exc

    def _send(self, account: LocalAccount, call: ContractFunction, what: str) -> str:
        """Simulate (to read a revert reason before paying gas), send, wait for a successful receipt."""
        try:
            call.call({"from": account.address})
        except ContractLogicError as exc:
            reason = revert_reason(exc)
            raise EscrowError(f"{what} reverted: {_explain(reason)}", reason) from exc
        except (Web3Exception, ValueError, OSError) as exc:
            raise ChainError(f"{what} failed: {exc}") from exc
        try:
            receipt = self.chain.transact(account, call, what)
        except ChainError as exc:
            cause = exc.__cause__
            if isinstance(cause, ContractLogicError):  # reverted after the simulation (the state changed)
                reason = revert_reason(cause)
                raise EscrowError(f"{what} reverted: {_explain(reason)}", reason) from exc
            raise
        return HexBytes(receipt["transactionHash"]).to_0x_hex()


def check_payment(
    escrow: Escrow, payer: str, token: str, payee: str, amount_wei: int, expiry_seconds: int
) -> Authorization:
    """Whether ``payee`` can lock ``amount_wei`` of ``payer``'s ``token`` for ``expiry_seconds``: the checks
    ocean-node makes before createLock, in its order and with its messages (core/utils/escrow.ts), each as an
    :class:`EscrowPaymentError`. Returns the one authorization that allows it.

    The contract keeps one authorization per (payer, token, payee), so "more than one" can only come from the
    zero address as ``payee`` (every payee's); ocean-node refuses that case as well."""
    if escrow.user_funds(payer, token).available < amount_wei:
        raise EscrowPaymentError(f"User {payer} does not have enough funds", "funds")
    auths = escrow.authorizations(token, payer, payee)
    if len(auths) != 1:
        raise EscrowPaymentError(
            f"No escrow auths found for: chain={escrow.chain.chain_id}, token={token}, payer={payer}, "
            f"nodeAddress={payee}. Found {len(auths)} authorizations.",
            "no_authorization" if not auths else "several_authorizations",
        )
    auth = auths[0]
    if auth.current_locked_amount + amount_wei > auth.max_locked_amount:
        raise EscrowPaymentError("No valid escrow auths found(will go over limit)", "max_locked_amount")
    if auth.max_lock_seconds < expiry_seconds:
        raise EscrowPaymentError("No valid escrow auths found(maxLockSeconds too low)", "max_lock_seconds")
    if auth.current_locks + 1 > auth.max_lock_counts:
        raise EscrowPaymentError("No valid escrow auths found(too many active locks)", "max_lock_counts")
    return auth


def revert_reason(exc: ContractLogicError) -> str:
    """The revert string of a failed call ("execution reverted: X" -> "X"), or web3's text for a custom error
    or a panic."""
    message = str(exc.message or exc)
    for prefix in ("execution reverted: ", "execution reverted:"):
        if message.startswith(prefix):
            return message[len(prefix) :].strip()
    return message


def _explain(reason: str) -> str:
    meaning = REVERT_MEANINGS.get(reason)
    return f"{reason} ({meaning})" if meaning else reason


def _address(value: str) -> str:
    return Web3.to_checksum_address(value)


def _matches(wanted: str, actual: str) -> bool:
    return wanted.lower() in (ZERO_ADDRESS, actual.lower())


def _event(kind: Literal["lock", "claimed", "canceled"], log: Any) -> LockEvent:
    args = log["args"]
    return LockEvent(
        kind=kind,
        lock_id=int(args["jobId"]),
        payer=str(args["payer"]),
        token=str(args["token"]),
        amount=int(args["amount"]),
        tx_hash=HexBytes(log["transactionHash"]).to_0x_hex(),
        block=int(log["blockNumber"]),
        log_index=int(log["logIndex"]),
    )
