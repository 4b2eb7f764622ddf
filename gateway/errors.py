"""The gateway's one error tree, and its one renderer (OpenAI's dialect, or Anthropic's).

    GatewayError                       500 api_error
    ├── InvalidRequest                 400 invalid_request_error
    │   ├── BodyTooLarge               413 invalid_request_error  (code request_too_large)
    │   └── MethodNotAllowed           405 invalid_request_error
    ├── AuthenticationFailed           401 authentication_error
    ├── PermissionDenied               403 permission_error
    ├── NotFound                       404 not_found_error
    │   └── ModelNotFound              404 not_found_error        (code model_not_found)
    ├── RateLimited                    429 rate_limit_error
    │   └── BudgetExceeded             429 rate_limit_error       (code insufficient_quota)
    ├── LimitsUnavailable              503 api_error              (a fail-closed team, Redis away)
    ├── UpstreamError                  502 api_error              (a backend answered badly)
    │   ├── UpstreamStatusError        upstream's 4xx passed on; 5xx, 401, 403 as 502
    │   ├── UpstreamTimeout            504 api_error
    │   └── UpstreamUnavailable        503 api_error              (no backend could be reached)
    └── InternalError                  500 api_error              (a bug; details only in the log)

Two exceptions are not client errors and stay outside the tree: `PolicyError` (a policy
file is invalid: a configuration error, reported by `validate` and reload, never rendered as
a 500) and `ClientGone` (the client left; there is no one to answer).

Routes raise; `render` turns any GatewayError into status, headers and body, for the raw
inference doors and the FastAPI routes alike, in the dialect of the door that was called:
OpenAI's `{"error": {"message", "type", "param", "code"}}`, or Anthropic's
`{"type": "error", "error": {"type", "message"}}` on `/v1/messages` (`dialect_for` says which).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import orjson

Dialect = Literal["openai", "anthropic"]

# An upstream refusing these refuses the gateway's own credentials, not the caller's request.
OWN_CREDENTIALS = frozenset({401, 403})


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.http_status = status if status is not None else self.status
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The OpenAI error object."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def json(self) -> bytes:
        """The error body as JSON bytes."""
        return orjson.dumps(self.body())


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class BodyTooLarge(InvalidRequest):
    status = 413
    default_code = "request_too_large"


class MethodNotAllowed(InvalidRequest):
    status = 405


class AuthenticationFailed(GatewayError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"


class NotFound(GatewayError):
    status = 404
    type = "not_found_error"


class ModelNotFound(NotFound):
    default_code = "model_not_found"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class BudgetExceeded(RateLimited):
    """A team's or key's budget for the period is used up."""

    default_code = "insufficient_quota"


class LimitsUnavailable(GatewayError):
    """A team that fails closed, and its limits cannot be checked right now."""

    status = 503
    default_code = "limits_unavailable"


class UpstreamError(GatewayError):
    status = 502
    type = "api_error"
    default_code = "upstream_error"


class UpstreamStatusError(UpstreamError):
    """A backend answered with an error status; its own error object is passed on if it had one."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        body: bytes = b"",
        retry_after_s: float | None = None,
    ) -> None:
        # A client error upstream is the client's error here too; a server error, or the
        # upstream refusing the gateway's own credentials, is ours (502).
        self.caller_error = 400 <= upstream_status < 500 and upstream_status not in OWN_CREDENTIALS
        super().__init__(message, status=upstream_status if self.caller_error else 502)
        self.upstream_status = upstream_status
        self.upstream_body = body
        # The backend's own `Retry-After` in seconds (an HTTP date: the seconds until then).
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        """The upstream's own error object where it had one; never for our own credentials."""
        ours = super().body()
        if self.upstream_status in OWN_CREDENTIALS:
            return ours
        try:
            parsed = orjson.loads(self.upstream_body) if self.upstream_body else None
        except orjson.JSONDecodeError:
            return ours
        inner = parsed.get("error") if isinstance(parsed, dict) else None
        if not isinstance(inner, dict):
            return ours
        message, kind = inner.get("message"), inner.get("type")
        if not (self.caller_error and isinstance(kind, str)):
            kind = _class_for(self.http_status).type
        return {
            "error": {
                "message": message if isinstance(message, str) else self.message,
                "type": kind,
                "param": inner.get("param"),
                "code": inner.get("code"),
            }
        }


class UpstreamTimeout(UpstreamError):
    status = 504
    default_code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    status = 503
    default_code = "upstream_unavailable"


class InternalError(GatewayError):
    default_code = "internal_error"


class PolicyError(ValueError):
    """A policy file is invalid; the message names file, line and key."""


class ClientGone(Exception):
    """The client disconnected before its request body arrived; nothing can be answered."""


def _class_for(status: int) -> type[GatewayError]:
    """The error class of the tree that owns a status (for statuses raised by the framework)."""
    for cls in _BY_STATUS:
        if cls.status == status:
            return cls
    return InvalidRequest if status < 500 else GatewayError


# Most specific first: a status maps to the first class that has it.
_BY_STATUS: tuple[type[GatewayError], ...] = (
    InvalidRequest,
    BodyTooLarge,
    MethodNotAllowed,
    AuthenticationFailed,
    PermissionDenied,
    NotFound,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)


def for_status(status: int, message: str) -> GatewayError:
    """An error of the tree for an HTTP status raised outside it (by the web framework)."""
    return _class_for(status)(message, status=status)


@dataclass(frozen=True, slots=True)
class Rendered:
    """An error as it goes on the wire."""

    status: int
    headers: dict[str, str]
    body: bytes


# Anthropic's error types by HTTP status; any other 4xx is an invalid request, 5xx an api_error.
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def anthropic_body(err: GatewayError) -> dict[str, Any]:
    """The error as Anthropic's error object (the message as OpenAI's body has it)."""
    status = err.http_status
    default = "invalid_request_error" if status < 500 else "api_error"
    message = err.body()["error"].get("message")
    return {
        "type": "error",
        "error": {
            "type": _ANTHROPIC_TYPES.get(status, default),
            "message": message if isinstance(message, str) else err.message,
        },
    }


def dialect_for(path: str) -> Dialect:
    """The error dialect of the door serving a path."""
    return "anthropic" if path.startswith(("/v1/messages", "/messages")) else "openai"


def render(
    err: GatewayError, request_id: str | None = None, dialect: Dialect = "openai"
) -> Rendered:
    """The one renderer: status, headers (with the request id when known) and JSON body."""
    headers = dict(err.headers)
    if request_id is not None:
        headers.setdefault("x-request-id", request_id)
    if dialect == "anthropic":
        body = anthropic_body(err)
        if request_id is not None:
            body["request_id"] = request_id
        return Rendered(err.http_status, headers, orjson.dumps(body))
    return Rendered(err.http_status, headers, err.json())
