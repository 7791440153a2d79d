"""ABIs and bytecode of the Ocean contracts, read from the npm package ``@oceanprotocol/contracts``.

The package stays at 2.0.3 (what ocean.py 3.1.2 works against); the Escrow contract, first shipped in 2.3.0,
comes from the same package at 2.6.0 installed under the npm alias ``@oceanprotocol/contracts-escrow``. Its
ABI is the one ocean.js 8.6.2 bundles (contracts 2.8.0: Escrow.sol is unchanged from 2.6.0 to 2.8.0), and
its constructor needs only ``getOPCFee(address)`` and ``getOPCCollector()`` of the 2.0.3 FactoryRouter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from c2d.exceptions import MissingDependencyError

PACKAGE = "@oceanprotocol/contracts"
ESCROW_PACKAGE = "@oceanprotocol/contracts-escrow"  # npm:@oceanprotocol/contracts@2.6.0 (package.json)

# Contract name -> artifact path inside the package (Hardhat layout: artifacts/contracts/<dir>/<Name>.sol/<Name>.json)
ARTIFACT_PATHS: dict[str, str] = {
    "OceanToken": "contracts/utils/OceanToken.sol/OceanToken.json",
    "OPFCommunityFeeCollector": "contracts/communityFee/OPFCommunityFeeCollector.sol/OPFCommunityFeeCollector.json",
    "FactoryRouter": "contracts/pools/FactoryRouter.sol/FactoryRouter.json",
    "FixedRateExchange": "contracts/pools/fixedRate/FixedRateExchange.sol/FixedRateExchange.json",
    "Dispenser": "contracts/pools/dispenser/Dispenser.sol/Dispenser.json",
    "ERC20Template": "contracts/templates/ERC20Template.sol/ERC20Template.json",
    "ERC20TemplateEnterprise": "contracts/templates/ERC20TemplateEnterprise.sol/ERC20TemplateEnterprise.json",
    "ERC20Template3": "contracts/templates/ERC20Template3.sol/ERC20Template3.json",
    "ERC721Template": "contracts/templates/ERC721Template.sol/ERC721Template.json",
    "ERC721Factory": "contracts/ERC721Factory.sol/ERC721Factory.json",
    "Escrow": "contracts/escrow/Escrow.sol/Escrow.json",
}
# Contracts read from another package than PACKAGE
ARTIFACT_PACKAGES: dict[str, str] = {"Escrow": ESCROW_PACKAGE}


class Artifacts:
    """Loads (once) and serves contract artifacts from ``<npm_dir>/@oceanprotocol/contracts`` (and Escrow's from
    ``<npm_dir>/@oceanprotocol/contracts-escrow``)."""

    def __init__(self, npm_dir: Path) -> None:
        self.npm_dir = npm_dir
        self.root = npm_dir / PACKAGE / "artifacts"
        if not self.root.is_dir():
            raise MissingDependencyError(
                f"npm package {PACKAGE} not found in {npm_dir}; run `make setup` (npm ci) first"
            )
        self._cache: dict[str, dict[str, Any]] = {}

    @property
    def version(self) -> str:
        package = json.loads((self.root.parent / "package.json").read_text())
        return str(package["version"])

    def _load(self, name: str) -> dict[str, Any]:
        if name not in self._cache:
            try:
                relative = ARTIFACT_PATHS[name]
            except KeyError:
                raise MissingDependencyError(f"no artifact known for contract {name}") from None
            package = ARTIFACT_PACKAGES.get(name, PACKAGE)
            path = self.npm_dir / package / "artifacts" / relative
            try:
                self._cache[name] = json.loads(path.read_text())
            except OSError as exc:
                raise MissingDependencyError(
                    f"artifact of {name} missing at {path}: {exc.strerror}; run `make setup` (npm ci installs it)"
                ) from exc
        return self._cache[name]

    def abi(self, name: str) -> list[dict[str, Any]]:
        abi: list[dict[str, Any]] = self._load(name)["abi"]
        return abi

    def bytecode(self, name: str) -> str:
        code: str = self._load(name)["bytecode"]
        return code
