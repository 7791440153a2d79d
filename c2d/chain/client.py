"""A small typed client over web3: contracts by name, locally signed transactions, receipts."""

from __future__ import annotations

import threading
from typing import Any

from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.exceptions import ContractLogicError, TimeExhausted, Web3Exception
from web3.types import TxParams, TxReceipt

from c2d.chain.artifacts import Artifacts
from c2d.exceptions import ChainError


class Chain:
    """One chain endpoint. Transactions are signed locally, so it works with any JSON-RPC node."""

    def __init__(self, rpc_url: str, artifacts: Artifacts, receipt_timeout: float = 120.0) -> None:
        self.rpc_url = rpc_url
        self.w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
        self.artifacts = artifacts
        self.receipt_timeout = receipt_timeout
        self._send_lock = threading.Lock()  # one pending-nonce sequence per client
        self._chain_id: int | None = None

    @property
    def chain_id(self) -> int:
        """The endpoint's chain id: asked once (an RPC round trip each time before: per API request on a remote
        endpoint), then kept. A chain's id does not change; an endpoint moved to another chain needs a restart."""
        if self._chain_id is None:
            self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    def contract(self, name: str, address: str) -> Contract:
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=self.artifacts.abi(name))

    def has_code(self, address: str) -> bool:
        return len(self.w3.eth.get_code(Web3.to_checksum_address(address))) > 0

    def deploy(self, account: LocalAccount, name: str, *args: Any) -> str:
        """Deploy contract ``name`` with constructor ``args``; return its checksummed address."""
        factory = self.w3.eth.contract(abi=self.artifacts.abi(name), bytecode=self.artifacts.bytecode(name))
        receipt = self._send(account, factory.constructor(*args), f"deploy {name}")
        address = receipt.get("contractAddress")
        if not address:
            raise ChainError(f"deploy {name}: receipt has no contract address")
        return str(address)

    def transact(self, account: LocalAccount, call: ContractFunction, what: str | None = None) -> TxReceipt:
        """Send a contract call signed by ``account`` and wait for a successful receipt."""
        return self._send(account, call, what or call.fn_name)

    def _send(self, account: LocalAccount, call: Any, what: str) -> TxReceipt:
        with self._send_lock:
            try:
                params: TxParams = {
                    "from": account.address,
                    "nonce": self.w3.eth.get_transaction_count(account.address, "pending"),
                    "chainId": self.chain_id,
                }
                tx = call.build_transaction(params)
                signed = account.sign_transaction(tx)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except ContractLogicError as exc:
                raise ChainError(f"{what} reverted: {exc.message or exc}") from exc
            except (Web3Exception, ValueError, OSError) as exc:
                raise ChainError(f"{what} failed: {exc}") from exc
        return self.wait(tx_hash, what)

    def wait(self, tx_hash: HexBytes | bytes | str, what: str = "transaction") -> TxReceipt:
        try:
            receipt = self.w3.eth.wait_for_transaction_receipt(
                HexBytes(tx_hash), timeout=self.receipt_timeout, poll_latency=0.05
            )
        except TimeExhausted as exc:
            raise ChainError(f"{what}: no receipt after {self.receipt_timeout:.0f} s") from exc
        if receipt["status"] != 1:
            raise ChainError(f"{what}: transaction {HexBytes(tx_hash).to_0x_hex()} failed on chain")
        return receipt
