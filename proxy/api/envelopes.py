"""Render every error in the caller's own envelope: Anthropic for /v1/messages, Gemini for /v1beta/, OpenAI
elsewhere.

Werkzeug's HTML error pages (404 route, 405 method, 413 body) and unexpected exceptions are turned into
the same JSON envelope; a traceback goes to the log, never to the client.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, json, request
from werkzeug.exceptions import HTTPException

from proxy.api import gemini_shape
from proxy.errors import GatewayError, NoKeyAvailable
from proxy.store.base import StoreUnavailable

log = logging.getLogger("keyrelay")

_HTTP_MESSAGES = {
    404: "Unknown path {path}. See GET /v1/models and the README for the endpoints.",
    405: "Method {method} is not allowed on {path}.",
    413: "Request body is larger than this gateway's limit ({limit} bytes).",
}


def is_anthropic_path(path: str) -> bool:
    return path.startswith("/v1/messages")


def error_response(err: GatewayError) -> Response:
    g.error_code = err.code  # for the request log line
    if request.path.startswith("/v1beta/"):  # the Gemini-native endpoint
        body = gemini_shape.error_body(err)
    else:
        body = err.anthropic_body() if is_anthropic_path(request.path) else err.openai_body()
    resp = Response(json.dumps(body), status=err.status, mimetype="application/json")
    for name, value in err.response_headers().items():
        resp.headers[name] = value
    return resp


def install(app: Flask) -> None:
    @app.errorhandler(GatewayError)
    def _gateway(err: GatewayError) -> Response:
        if isinstance(err, NoKeyAvailable):  # the per-key story is the operator's, not the client's
            log.warning("no usable upstream key", extra={
                "event": "no_usable_key", "request_id": g.get("request_id"), "status": err.status,
                "diagnosis": err.diagnosis})
        return error_response(err)

    @app.errorhandler(StoreUnavailable)
    def _store(exc: StoreUnavailable) -> Response:
        """A data-plane call that could not do without the database (most serve from their last view)."""
        log.warning("request needed the database: %s", exc, extra={"event": "store_unavailable"})
        return error_response(GatewayError(
            "The gateway's database is unavailable right now; retry shortly.", status=503,
            code="database_unavailable", headers={"Retry-After": "1"}))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        template = _HTTP_MESSAGES.get(status)
        message = (
            template.format(
                path=request.path, method=request.method, limit=app.config.get("MAX_CONTENT_LENGTH")
            )
            if template
            else (exc.description or exc.name)
        )
        allowed = getattr(exc, "valid_methods", None)  # set on MethodNotAllowed (405)
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        code = "request_too_large" if status == 413 else exc.name.lower().replace(" ", "_")
        return error_response(GatewayError(message, status=status, code=code, headers=headers))

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error", extra={"event": "unhandled_error"})
        return error_response(
            GatewayError("internal error in keyrelay; see its log", status=500, code="internal_error")
        )
