"""The embedded chain: anvil (npm ``@foundry-rs/anvil``) with the Ocean contracts deployed on it.

Anvil keeps its state in ``<data_dir>/chain/state.json`` (loaded at start, dumped every few seconds and
at exit), so orders and DDOs survive a restart of the stack together with the jobs in Postgres.
"""

from __future__ import annotations

import platform
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
from eth_account import Account
from eth_account.signers.local import LocalAccount

from c2d.chain.artifacts import Artifacts
from c2d.chain.client import Chain
from c2d.chain.deploy import (
    OceanAddresses,
    deploy_escrow,
    deploy_ocean_contracts,
    has_escrow,
    is_deployed,
    read_address_file,
    write_address_file,
)
from c2d.exceptions import ChainError, MissingDependencyError, StackError
from c2d.settings import Settings
from c2d.stack.ports import ensure_port_free
from c2d.stack.procs import ManagedProcess, ProcessSpec, wait_until

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def anvil_binary(npm_dir: Path) -> Path:
    arch = _ARCH.get(platform.machine().lower(), platform.machine())
    binary = npm_dir / "@foundry-rs" / f"anvil-{platform.system().lower()}-{arch}" / "bin" / "anvil"
    if not binary.is_file():
        raise MissingDependencyError(
            f"anvil not found at {binary}; run `make setup` (npm ci installs @foundry-rs/anvil)"
        )
    return binary


def rpc_answers(url: str) -> bool:
    try:
        response = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and "result" in response.json()


class EmbeddedChain:
    """anvil on ``settings.host:settings.chain.port``, chain id ``settings.chain.chain_id``."""

    name = "anvil"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        chain = settings.chain
        state = settings.chain_dir / "state.json"
        argv = [
            str(anvil_binary(settings.npm_dir)),
            "--host",
            settings.host,
            "--port",
            str(chain.port),
            "--chain-id",
            str(chain.chain_id),
            "--state",
            str(state),
            "--state-interval",
            "2",
            "--accounts",
            "10",
            "--balance",
            "100000",
        ]
        if chain.block_time > 0:
            argv += ["--block-time", str(chain.block_time)]
        self.proc = ManagedProcess(
            ProcessSpec(
                name=self.name,
                argv=argv,
                log_file=settings.log_dir / "anvil.log",
                stop_signal=signal.SIGTERM,
                stop_timeout=15,
            ),
            settings.run_dir,
        )

    def start(self) -> None:
        ensure_port_free(self.settings.host, self.settings.chain.port, "anvil", "C2D_CHAIN__PORT")
        self.settings.chain_dir.mkdir(parents=True, exist_ok=True)
        self.proc.start()
        wait_until(lambda: rpc_answers(self.settings.rpc_url), self.proc, timeout=30, what="answering RPC")

    def check(self) -> str:
        if not self.proc.alive() and self.proc.pid is not None:
            raise self.proc.fail("is not running")
        if not rpc_answers(self.settings.rpc_url):
            raise StackError(f"anvil does not answer at {self.settings.rpc_url}")
        return f"anvil chain {self.settings.chain.chain_id} at {self.settings.rpc_url}"

    def stop(self) -> None:
        self.proc.stop()


class ExternalChain:
    """A chain we do not own: only checked."""

    name = "chain"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start(self) -> None:
        self.check()

    def check(self) -> str:
        if not rpc_answers(self.settings.rpc_url):
            raise StackError(f"chain RPC {self.settings.rpc_url} (C2D_CHAIN__RPC_URL) does not answer")
        return f"external chain at {self.settings.rpc_url}"

    def stop(self) -> None:
        return None


class OceanContracts:
    """Makes sure the Ocean contracts are on the chain and the address file describes them."""

    name = "contracts"

    def __init__(self, settings: Settings, progress: Callable[[str], None]) -> None:
        self.settings = settings
        self.progress = progress

    def _chain(self) -> Chain:
        return Chain(self.settings.rpc_url, Artifacts(self.settings.npm_dir))

    def start(self) -> None:
        """Deploy what the address file lacks on the embedded chain: everything, or only Escrow when the file
        comes from before Escrow (the other contracts and what was published with them stay). An external
        chain's file is only checked; one without Escrow is left so (paid ocean.js jobs need it)."""
        chain = self._chain()
        current = read_address_file(self.settings.address_file)
        if current is not None and is_deployed(chain, current):
            if has_escrow(chain, current) or not self.settings.chain.embedded:
                return
            addresses = self._deploy(lambda owner: deploy_escrow(chain, owner, current, self.progress))
        elif not self.settings.chain.embedded:
            raise StackError(
                f"no Ocean contracts found for {self.settings.rpc_url} in {self.settings.address_file}; "
                "point C2D_CHAIN__ADDRESS_FILE at the network's address.json"
            )
        else:
            addresses = self._deploy(lambda owner: deploy_ocean_contracts(chain, owner, self.progress))
        write_address_file(self.settings.address_file, addresses)

    def _deploy(self, deploy: Callable[[LocalAccount], OceanAddresses]) -> OceanAddresses:
        owner: LocalAccount = Account.from_key(self.settings.chain.deployer_key.get_secret_value())
        try:
            return deploy(owner)
        except ChainError as exc:
            raise StackError(f"deploying the Ocean contracts failed: {exc}") from exc

    def addresses(self) -> OceanAddresses:
        current = read_address_file(self.settings.address_file)
        if current is None:
            raise StackError(f"address file {self.settings.address_file} has no development network")
        return current

    def check(self) -> str:
        current = self.addresses()
        if not is_deployed(self._chain(), current):
            raise StackError(f"contracts of {self.settings.address_file} are not on the chain")
        version = Artifacts(self.settings.npm_dir).version
        escrow = f", Escrow {current.escrow}" if current.escrow else ", no Escrow"
        return f"Ocean contracts {version}, ERC721Factory {current.erc721_factory}{escrow}"

    def stop(self) -> None:
        return None
