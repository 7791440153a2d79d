"""Errors of the core package. Every error carries a one-line, actionable message."""


class C2DError(Exception):
    """The root of the project's errors: every package's base class derives from it (``steps``' StepError,
    ``workflows``' WorkflowError, ``provider``' ProviderError), so an entry point catches this one class."""


class StackError(C2DError):
    """A part of the embedded stack could not be started, checked or stopped."""


class PortInUseError(StackError):
    """A port the stack needs is taken by another process."""


class MissingDependencyError(StackError):
    """A binary or package the stack needs is not installed."""


class DatabaseError(C2DError):
    """The database refused an operation or holds unexpected data."""


class MigrationError(DatabaseError):
    """A schema migration failed or the schema is newer than this code."""


class ChainError(C2DError):
    """A chain call, deployment or transaction failed."""


class EscrowError(ChainError):
    """An Escrow contract call was refused or reverted. ``reason``: the contract's revert string (e.g.
    ``"Exceeds maxLockedAmount"``) or the client's check that refused before sending (``"Lock not found"``,
    ``"Lock not expired"``): set, nothing happened on chain; None: see the message."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class EscrowPaymentError(EscrowError):
    """The payer's Escrow funds or authorization cannot cover a lock (checked before sending createLock).
    The message is ocean-node's for the same cause; ``cause`` names it for the HTTP edge: ``"funds"``,
    ``"no_authorization"``, ``"several_authorizations"``, ``"max_locked_amount"``, ``"max_lock_seconds"`` or
    ``"max_lock_counts"``."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


class UnsupportedImageError(C2DError):
    """The local engine has no runtime for an algorithm's container image."""


class ResourceRequestError(C2DError):
    """A job asked for resources its environment does not have or cannot give one job."""


class GpuBusyError(C2DError):
    """Not enough of an environment's GPUs are free for a job now (other jobs hold them; devices are host-wide,
    so a job of another environment that declares the same device holds it too)."""


class NonceError(C2DError):
    """A request nonce is not greater than the last one stored for the address."""


class OrderAlreadyUsedError(C2DError):
    """An order transaction was already used to start a job."""


class StorageError(C2DError):
    """An object store, IPFS node or URL could not serve or take data."""


class TransientStorageError(StorageError):
    """A storage operation failed in a way that may work later (connection lost, 5xx, timeout)."""


class ObjectNotFoundError(StorageError):
    """The object, key, bucket or CID does not exist."""


class StorageAccessError(StorageError):
    """The store refused our credentials or the request (wrong keys, access denied)."""


class BlockedAddressError(StorageError):
    """A URL resolves to a loopback, private, link-local or metadata address that is not allow-listed."""
