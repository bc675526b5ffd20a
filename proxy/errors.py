"""One exception hierarchy for every error a client can see.

The API blueprints render a GatewayError in the client's own dialect (OpenAI or Anthropic envelope);
nothing else in the code builds error bodies.
"""

from __future__ import annotations

import math
from typing import Any

# Outcome classes of an upstream answer; they drive the key manager (see design.md).
OK = "ok"
QUOTA = "quota"
AUTH = "auth"
TRANSIENT = "transient"
CLIENT = "client"
OUTCOMES = (OK, QUOTA, AUTH, TRANSIENT, CLIENT)

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class GatewayError(Exception):
    """An error with an HTTP status and a message that is safe to show a client."""

    status: int = 500
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        details: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.details = details
        self.retry_after: float | None = None  # seconds; rendered as Retry-After on a 429

    def response_headers(self) -> dict[str, str]:
        """The headers of this error's HTTP response: the one place ``Retry-After`` is rendered."""
        if self.retry_after is None or self.status != 429:
            return self.headers
        return {**self.headers, "Retry-After": str(max(1, math.ceil(self.retry_after)))}

    def openai_body(self) -> dict:
        err: dict[str, Any] = {
            "message": self.message,
            "type": _OPENAI_TYPES.get(
                self.status, "server_error" if self.status >= 500 else "invalid_request_error"
            ),
            "param": self.param,
            "code": self.code,
        }
        if self.details is not None:
            err["details"] = self.details
        return {"error": err}

    def anthropic_body(self) -> dict:
        err_type = _ANTHROPIC_TYPES.get(
            self.status, "api_error" if self.status >= 500 else "invalid_request_error")
        body: dict[str, Any] = {"type": "error", "error": {"type": err_type, "message": self.message}}
        if self.details is not None:
            body["error"]["details"] = self.details
        return body


class BadRequest(GatewayError):
    status = 400
    code = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "request_too_large"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"


class MisdirectedRequest(GatewayError):
    """A Host header this gateway does not answer to (DNS-rebinding defence)."""

    status = 421
    code = "host_not_allowed"


class NoKeyAvailable(GatewayError):
    """No key can serve the request. ``cooling``: at least one key comes back by itself (cooldown, open
    circuit) in ``retry_after`` seconds: 429 ``all_keys_cooling``; else 503 ``no_usable_key``.

    ``diagnosis`` (per-key ids and reasons) is for the log and the admin API, never for the client;
    ``details`` (``{"keys": [...]}``: per key numbered in its provider, its limits, used, resets_at) is."""

    status = 503
    code = "no_usable_key"

    def __init__(self, message: str, *, retry_after: float | None = None,
                 diagnosis: list[dict] | None = None) -> None:
        cooling = retry_after is not None
        super().__init__(message, status=429 if cooling else 503,
                         code="all_keys_cooling" if cooling else "no_usable_key")
        self.cooling = cooling
        self.retry_after = retry_after
        self.diagnosis = diagnosis or []


class UpstreamError(GatewayError):
    """An upstream answered with an error or could not be reached.

    ``outcome`` is one of QUOTA / AUTH / TRANSIENT / CLIENT; ``retry_after`` (seconds) comes from the
    upstream (Gemini RetryInfo, Retry-After) when it said; ``daily`` marks a spent daily quota.
    ``status`` is what the client should see. The message never contains a key.
    """

    status = 502
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        outcome: str,
        status: int = 502,
        retry_after: float | None = None,
        daily: bool = False,
        upstream_status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.outcome = outcome
        self.retry_after = retry_after
        self.daily = daily
        self.upstream_status = upstream_status
        self.limits: list[Any] = []  # quota limits the answer revealed (proxy.keys.learn.Learned)
