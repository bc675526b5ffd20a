"""What every client-facing blueprint shares: the gateway, the JSON body, the trace, the response shapes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import orjson
from flask import Response, current_app, g, request
from gunicorn.http.errors import NoMoreData, ParseException

from proxy.api.shapes import check_depth
from proxy.errors import BadRequest, PayloadTooLarge
from proxy.providers.toolkit import HeaderLookup
from proxy.relay import Trace, check_model

if TYPE_CHECKING:  # proxy.app imports the blueprints, which import this module
    from proxy.app import Gateway


def gateway() -> Gateway:
    """This app's Gateway (``create_app`` puts it in ``app.extensions``)."""
    return current_app.extensions["keyrelay"]


def read_body() -> bytes:
    """The request body, at most MAX_CONTENT_LENGTH bytes (413 past it) for both framings: with a
    Content-Length Werkzeug refuses before reading; a chunked body is counted while it is read. A
    broken chunked framing (bad chunk size, missing terminator, early end) is the client's 400."""
    try:
        if request.content_length is not None:
            return request.get_data(cache=True)  # 413 before reading when Content-Length is too large
        if "_body" not in g:  # chunked: Werkzeug would cut the body at the limit without a word
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            g._body = request.environ["wsgi.input"].read(limit + 1)
            if len(g._body) > limit:
                raise PayloadTooLarge(f"Request body is larger than this gateway's limit ({limit} bytes).")
        return g._body
    except (ParseException, NoMoreData) as exc:
        raise BadRequest(f"Malformed request body framing: {type(exc).__name__}.",
                         code="malformed_body") from None


def read_json(required: bool = True) -> dict:
    """The request body as a JSON object, or a 400 that says what is wrong (an empty body is ``{}``
    when not required)."""
    raw = read_body()
    if not raw.strip():
        if not required:
            return {}
        raise BadRequest("Request body is empty; expected a JSON object.")
    try:
        body = orjson.loads(raw)  # orjson: ~5x faster than json here (bench/RESULTS.md)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object.")
    check_depth(body)
    return body


def authenticate() -> None:
    """The data-plane blueprints' first step: who is calling (401 before the body is even read). Gemini
    clients send their key as ``x-goog-api-key`` or ``?key=``: accepted on the Gemini blueprint only."""
    headers: HeaderLookup = request.headers
    if request.blueprint == "gemini" and not headers.get("Authorization"):
        google_key = headers.get("x-goog-api-key") or request.args.get("key")
        if google_key:
            headers = {"Authorization": f"Bearer {google_key}"}
    g.client = gateway().clients.authenticate(headers)


def start_trace(model: str, req: dict) -> Trace:
    """Begin one relayed request: its model name passes the grammar (400), the client may use the model
    (403) and is within its limits and budget (429); ``req`` (OpenAI shape) sizes the token reservation."""
    g.model = check_model(model)
    client = g.get("client")
    g.trace = Trace(spans=g.get("spans"),
                    hook=gateway().inspector.begin(g.request_id, g.model, client.id if client else None,
                                                   request.headers, g.get("started")))
    g.admission = gateway().clients.admit(client, g.model, req)
    return g.trace


def close(items: Iterator) -> None:
    """Close a stream at once (a client that went away must release the upstream connection now, not
    whenever the garbage collector gets to the generator)."""
    closer = getattr(items, "close", None)
    if closer is not None:
        closer()


class StreamBody:
    """A streamed answer as the WSGI server sees it: iterating it is iterating ``items`` itself (no
    framework layer per event: the response is ``direct_passthrough``), and the server's ``close()`` at
    the end, or when the client went away, closes ``items`` at once (which closes the upstream) and
    runs the response's close hooks (the request log, the usage settlement) once."""

    __slots__ = ("items", "resp")

    def __init__(self, items: Iterator[bytes]) -> None:
        self.items = items
        self.resp: Response | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self.items

    def close(self) -> None:
        resp, self.resp = self.resp, None
        close(self.items)
        if resp is not None:
            resp.close()  # closes this body again (a no-op now), then runs the call_on_close hooks


def stream_response(items: Iterator[bytes], trace: Trace) -> Response:
    """A ``text/event-stream`` answer of ``items`` (each already encoded bytes, sent as it comes)."""
    body = StreamBody(items)
    resp = Response(body, mimetype="text/event-stream", direct_passthrough=True)
    body.resp = resp
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"
    if trace.route_name:
        resp.headers["X-Keyrelay-Route"] = trace.route_name
    return resp


def routed(payload: dict, trace: Trace) -> Response:
    # orjson straight into a Response: Flask's jsonify (json provider, indent checks) cost ~60 us more
    resp = Response(orjson.dumps(payload), mimetype="application/json")
    if trace.route_name:
        resp.headers["X-Keyrelay-Route"] = trace.route_name
    return resp
