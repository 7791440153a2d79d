"""May this algorithm run on this dataset? Ocean's trusted-algorithm rules, deny by default.

* raw algorithms: only when the dataset's compute service has ``allowRawAlgorithm: true``;
* published algorithms: the publisher must be listed in ``publisherTrustedAlgorithmPublishers`` and/or
  the algorithm in ``publisherTrustedAlgorithms`` (DID, and ``filesChecksum`` /
  ``containerSectionChecksum`` when given); both lists checked when both are set;
* both lists empty: denied (the legacy provider allowed any algorithm) unless one of them holds
  ``"*"`` (explicit allow-all) or the node sets ``C2D_PROVIDER__LEGACY_ALLOW_ANY_ALGORITHM``.
"""

from __future__ import annotations

from collections.abc import Callable

from provider.assets import Asset, Service, container_checksum
from provider.exceptions import ComputeRequestError

ALLOW_ALL = "*"


def check_raw_algorithm(service: Service, resource: str) -> None:
    if not service.compute.get("allowRawAlgorithm", False):
        raise ComputeRequestError(resource, "no_raw_algo_allowed", "the dataset does not allow raw algorithms")


def check_published_algorithm(
    service: Service,
    algorithm: Asset,
    files_checksum: Callable[[], str] | None,
    resource: str,
    legacy_allow_any: bool = False,
) -> None:
    compute = service.compute
    publishers = [str(p) for p in compute.get("publisherTrustedAlgorithmPublishers") or []]
    trusted = [t for t in compute.get("publisherTrustedAlgorithms") or [] if isinstance(t, dict)]
    if ALLOW_ALL in publishers or any(t.get("did") == ALLOW_ALL for t in trusted):
        return
    if not publishers and not trusted:
        if legacy_allow_any:
            return
        raise ComputeRequestError(resource, "not_trusted_algo", "the dataset trusts no algorithm (deny by default)")
    if publishers and algorithm.owner.lower() not in {p.lower() for p in publishers}:
        raise ComputeRequestError(
            resource, "not_trusted_algo_publisher", f"{algorithm.owner} is not a trusted publisher"
        )
    if trusted:
        entry = next((t for t in trusted if t.get("did") == algorithm.did), None)
        if entry is None:
            raise ComputeRequestError(resource, "not_trusted_algo", f"{algorithm.did} is not a trusted algorithm")
        expected_files = entry.get("filesChecksum")
        # files_checksum None: checked later (initializeCompute does not download the algorithm).
        if expected_files and files_checksum is not None and str(expected_files).lower() != files_checksum():
            raise ComputeRequestError(resource, "algorithm_file_checksum_mismatch", "the algorithm files changed")
        expected_container = entry.get("containerSectionChecksum")
        if expected_container and expected_container != container_checksum(algorithm.container):
            raise ComputeRequestError(
                resource, "algorithm_container_checksum_mismatch", "the container section changed"
            )


def check_algorithm_allowed(
    service: Service,
    algorithm: Asset | None,
    files_checksum: Callable[[], str] | None,
    resource: str,
    legacy_allow_any: bool,
) -> None:
    """The rules above for one compute service: raw (``algorithm`` None) or published."""
    if service.type != "compute":
        return
    if algorithm is None:
        check_raw_algorithm(service, resource)
    else:
        check_published_algorithm(service, algorithm, files_checksum, resource, legacy_allow_any)
