"""ABIs and bytecode of the Ocean contracts, read from the npm package ``@oceanprotocol/contracts``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from c2d.exceptions import MissingDependencyError

PACKAGE = "@oceanprotocol/contracts"

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
}


class Artifacts:
    """Loads (once) and serves contract artifacts from ``<npm_dir>/@oceanprotocol/contracts``."""

    def __init__(self, npm_dir: Path) -> None:
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
            path = self.root / relative
            try:
                self._cache[name] = json.loads(path.read_text())
            except OSError as exc:
                raise MissingDependencyError(f"artifact of {name} missing at {path}: {exc.strerror}") from exc
        return self._cache[name]

    def abi(self, name: str) -> list[dict[str, Any]]:
        abi: list[dict[str, Any]] = self._load(name)["abi"]
        return abi

    def bytecode(self, name: str) -> str:
        code: str = self._load(name)["bytecode"]
        return code
