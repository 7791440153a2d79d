"""Errors of the provider. Each knows its HTTP status and Ocean's error body; the API edge renders them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

from pydantic import BaseModel
from starlette.responses import JSONResponse, PlainTextResponse, Response

from c2d.exceptions import C2DError
from provider.models import ErrorResponse, OpenApi, ParseErrorResponse, ValidationErrorResponse


class ProviderError(C2DError):
    """Base class: ``{"error": <message>}`` with ``status``."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> ErrorResponse | ValidationErrorResponse:
        """The response body; written with ``exclude_none`` (a ``reason`` is left out when there is none)."""
        return ErrorResponse(error=self.message)


def error_response(exc: ProviderError) -> Response:
    """``exc`` as the API answers it (the app's handler, and the status fast path below FastAPI): Provider v2.1's
    JSON bodies, or ocean-node's message alone (a JSON string, or text where ocean-node sends text)."""
    if isinstance(exc, NodeProtocolError):
        if exc.text:
            return PlainTextResponse(exc.message, status_code=exc.status)
        return JSONResponse(exc.message, status_code=exc.status)
    return JSONResponse(exc.body().model_dump(mode="json", exclude_none=True), status_code=exc.status)


class RequestValidationFailed(ProviderError):
    """Ocean's (flask-sieve) shape: ``{"message": "Validation error", "errors": {...}, "success": false}``."""

    def __init__(self, errors: Mapping[str, list[str] | str]) -> None:
        """``errors``: field -> its messages, or one message (what Ocean answers for a signature)."""
        super().__init__("Validation error")
        self.errors = dict(errors)

    def body(self) -> ValidationErrorResponse:
        return ValidationErrorResponse(errors=self.errors)


class ComputeRequestError(ProviderError):
    """Ocean's compute validation shape: ``{"error": {"<resource>": "<code>"}}`` (plus a readable reason)."""

    def __init__(self, resource: str, code: str, reason: str = "") -> None:
        super().__init__(f"{resource}: {code}" + (f" ({reason})" if reason else ""))
        self.resource = resource
        self.code = code
        self.reason = reason

    def body(self) -> ErrorResponse:
        return ErrorResponse(error={self.resource: self.code}, reason=self.reason or None)


class NodeProtocolError(ProviderError):
    """An error of ocean-node's protocol (ocean.js 8.x): the HTTP status and the message alone, written as a JSON
    string (``"Invalid nonce or signature"``) or, where ocean-node sends text (initializeCompute), as text."""

    def __init__(self, message: str, status: int = 400, *, text: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.text = text

    @classmethod
    def missing(cls, field: str, command: str, required: tuple[str, ...], *, text: bool = False) -> NodeProtocolError:
        """ocean-node's 400 for a request without one of ``command``'s ``required`` fields."""
        return cls(
            f'Missing one ( "{field}" ) or more required field(s) for command: "{command}". '
            f"Required fields: {','.join(required)}",
            text=text,
        )

    @classmethod
    def of(cls, error: ProviderError, *, text: bool = False) -> NodeProtocolError:
        """A legacy-shaped error, said in ocean-node's shape (same status, its readable message); ``text``: written
        as text (initializeCompute)."""
        if isinstance(error, NodeProtocolError):
            return error if error.text == text else cls(error.message, error.status, text=text)
        message = error.message
        if isinstance(error, RequestValidationFailed):
            message = "; ".join(
                f"{field}: {' '.join(errors) if isinstance(errors, list) else errors}"
                for field, errors in error.errors.items()
            )
        return cls(message, error.status, text=text)


class Forbidden(ProviderError):
    status = 403


class NotFound(ProviderError):
    status = 404


class ServiceUnavailable(ProviderError):
    status = 503


class FileUnavailable(ProviderError):
    """A file of a service cannot be read (the message names no URL)."""


# -- the error bodies, as the OpenAPI document describes them -------------------------------------
# (as models: FastAPI writes them under the route's media type, which must be JSON: see PLAIN_TEXT_ERRORS)
ERROR_BODY: OpenApi = {
    "description": "Ocean's error shapes: {error}, {error: {<resource>: <code>}, reason} or "
    "{message: 'Validation error', errors, success: false}; FastAPI's {detail} for a body that is not UTF-8",
    "model": ErrorResponse | ValidationErrorResponse | ParseErrorResponse,
}
ERROR_RESPONSES: dict[int | str, OpenApi] = {
    400: ERROR_BODY,
    403: {"description": "{error}: not allowed", "model": ErrorResponse},
    404: {"description": "{error}: not found", "model": ErrorResponse},
    503: {"description": "{error}: the node's database or a store is unavailable for now", "model": ErrorResponse},
}


def _node_error(description: str, *, text: bool = False) -> OpenApi:
    """An error of an endpoint both protocols share: Provider v2.1's JSON bodies, or ocean-node's message as a JSON
    string (and, where ocean-node sends text, as text)."""
    schema = {
        "anyOf": [
            *_json(ErrorResponse, ValidationErrorResponse, ParseErrorResponse)["application/json"]["schema"]["anyOf"],
            {"type": "string", "description": "ocean-node's message"},
        ]
    }
    content: OpenApi = {"application/json": {"schema": schema}}
    if text:
        content["text/plain"] = {"schema": {"type": "string", "description": "ocean-node's message"}}
    return {"description": description, "content": content}


def node_error_responses(*, text: bool = False) -> dict[int | str, OpenApi]:
    """The errors of a route that also serves ocean-node's protocol (400, 401 for a bad signature, 500 for what
    ocean-node answers 500: an unknown environment, a payment the environment does not take)."""
    return {
        400: _node_error("Provider v2.1's error bodies, or ocean-node's message", text=text),
        401: _node_error("ocean-node: the signature or the nonce does not hold", text=text),
        500: _node_error("ocean-node: an unknown environment, an unaccepted payment, a missing order", text=text),
        503: _node_error("the node's database or chain is unavailable for now", text=text),
    }


def _json(*models: type[BaseModel]) -> OpenApi:
    refs = [{"$ref": f"#/components/schemas/{model.__name__}"} for model in models]
    return {"application/json": {"schema": refs[0] if len(refs) == 1 else {"anyOf": refs}}}


# The same, for routes that answer text/plain: the schemas by reference (the JSON routes register them).
PLAIN_TEXT_ERRORS: dict[int | str, OpenApi] = {
    code: {
        "description": response["description"],
        "content": _json(*get_args(response["model"]) or [response["model"]]),
    }
    for code, response in ERROR_RESPONSES.items()
}
