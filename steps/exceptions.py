"""Errors of the step programs. Each carries the exit code the engines map to an Ocean status."""

from c2d.exceptions import C2DError
from steps.contract import EXIT_ALGORITHM_FAILED, EXIT_DATA_FAILED, EXIT_PUBLISH_FAILED, EXIT_TEMPFAIL


class StepError(C2DError):
    """Base class of every error raised by ``steps``."""

    exit_code = 1


class FetchError(StepError):
    """A file could not be fetched, or it was not what the publisher declared."""

    exit_code = EXIT_DATA_FAILED


class TransientFetchError(FetchError):
    """A fetch failed in a way that may work later (connection error, HTTP 5xx, 429)."""

    exit_code = EXIT_TEMPFAIL


class AlgorithmFetchError(StepError):
    exit_code = EXIT_ALGORITHM_FAILED


class PublishError(StepError):
    exit_code = EXIT_PUBLISH_FAILED


class SpecError(StepError):
    """The step was started with missing or malformed instructions."""

    exit_code = 2


class TransientPublishError(PublishError):
    """Storing failed in a way that may work later (store unreachable, connection lost, 5xx)."""

    exit_code = EXIT_TEMPFAIL
