"""The gateway's one error tree; every error renders as an OpenAI-shaped JSON body.

    GatewayError                       500 api_error
    ├── InvalidRequest                 400 invalid_request_error
    │   ├── BodyTooLarge               413 invalid_request_error
    │   └── UnsupportedMediaType       415 invalid_request_error
    ├── AuthenticationFailed           401 authentication_error
    ├── PermissionDenied               403 permission_error
    ├── NotFound                       404 not_found_error
    │   └── ModelNotFound              404 not_found_error  (code model_not_found)
    ├── RateLimited                    429 rate_limit_error
    ├── UpstreamError                  502 api_error        (a backend answered badly)
    │   ├── UpstreamStatusError        upstream's 4xx passed on; 5xx as 502
    │   ├── UpstreamTimeout            504 api_error
    │   └── UpstreamUnavailable        503 api_error        (no backend could be reached)
    └── PolicyError                    500 api_error        (never reaches a client at startup)

Routes raise; a single exception handler renders `{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson


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


class UnsupportedMediaType(InvalidRequest):
    status = 415


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


class UpstreamError(GatewayError):
    status = 502
    type = "api_error"
    default_code = "upstream_error"


class UpstreamStatusError(UpstreamError):
    """A backend answered with an error status; `body` is its error object if it had one."""

    def __init__(self, message: str, *, upstream_status: int, body: bytes = b"") -> None:
        # A client error upstream is the client's error here too; a server error, or the
        # upstream refusing the gateway's own credentials, is ours (502).
        caller_error = 400 <= upstream_status < 500 and upstream_status not in (401, 403)
        status = upstream_status if caller_error else 502
        super().__init__(message, status=status)
        self.upstream_status = upstream_status
        self.upstream_body = body


class UpstreamTimeout(UpstreamError):
    status = 504
    default_code = "upstream_timeout"


class UpstreamUnavailable(UpstreamError):
    status = 503
    default_code = "upstream_unavailable"


class PolicyError(GatewayError):
    """A policy file is invalid; the message names file, line and key."""


_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for_status(status: int) -> str:
    """The OpenAI error type a status maps to."""
    return _TYPE_BY_STATUS.get(status, "invalid_request_error" if status < 500 else "api_error")


def upstream_error_body(err: UpstreamStatusError) -> bytes:
    """The body to send for an upstream error: its own OpenAI error if it had one, else ours."""
    try:
        parsed = orjson.loads(err.upstream_body) if err.upstream_body else None
    except orjson.JSONDecodeError:
        parsed = None
    own_credentials = err.upstream_status in (401, 403)
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict) and not own_credentials:
        inner = parsed["error"]
        message = inner.get("message")
        kind = inner.get("type") if err.http_status < 500 else None
        return orjson.dumps(
            {
                "error": {
                    "message": message if isinstance(message, str) else err.message,
                    "type": kind or error_type_for_status(err.http_status),
                    "param": inner.get("param"),
                    "code": inner.get("code"),
                }
            }
        )
    return orjson.dumps(
        {
            "error": {
                "message": err.message,
                "type": error_type_for_status(err.http_status),
                "param": None,
                "code": err.code,
            }
        }
    )
