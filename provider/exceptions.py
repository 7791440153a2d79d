"""Errors of the provider. Each knows its HTTP status and Ocean's error body; the API edge renders them."""

from __future__ import annotations

from typing import Any

from c2d.exceptions import C2DError


class ProviderError(C2DError):
    """Base class: ``{"error": <message>}`` with ``status``."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": self.message}


class RequestValidationFailed(ProviderError):
    """Ocean's (flask-sieve) shape: ``{"message": "Validation error", "errors": {...}, "success": false}``."""

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__("Validation error")
        self.errors = errors

    def body(self) -> dict[str, Any]:
        return {"message": "Validation error", "errors": self.errors, "success": False}


class ComputeRequestError(ProviderError):
    """Ocean's compute validation shape: ``{"error": {"<resource>": "<code>"}}`` (plus a readable reason)."""

    def __init__(self, resource: str, code: str, reason: str = "") -> None:
        super().__init__(f"{resource}: {code}" + (f" ({reason})" if reason else ""))
        self.resource = resource
        self.code = code
        self.reason = reason

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": {self.resource: self.code}}
        if self.reason:
            body["reason"] = self.reason
        return body


class Forbidden(ProviderError):
    status = 403


class NotFound(ProviderError):
    status = 404


class ServiceUnavailable(ProviderError):
    status = 503


class FileUnavailable(ProviderError):
    """A file of a service cannot be read (the message names no URL)."""


# -- the error bodies, as the OpenAPI document describes them -------------------------------------
_ANY_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}
ERROR_BODY: dict[str, Any] = {
    "description": "Ocean's error shapes: {error}, {error: {<resource>: <code>}, reason} or "
    "{message: 'Validation error', errors, success: false}",
    "content": {"application/json": {"schema": _ANY_OBJECT}},
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: ERROR_BODY,
    403: ERROR_BODY,
    404: ERROR_BODY,
    503: {**ERROR_BODY, "description": "The node's database or a store is unavailable for now"},
}
