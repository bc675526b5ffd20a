"""The OpenAI Responses API: POST /v1/responses, GET and DELETE /v1/responses/{id}.

A request is translated at the door into the internal chat shape (``responses_shape``) and relayed like
any chat completion, so every upstream serves it; the answer goes back as a ``response`` object or the
typed stream events. With ``store`` (the default, as at OpenAI) the response and the conversation so far
are kept for ``STORE_TTL_S`` per client key, so that ``previous_response_id`` replays the earlier turns.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import cast

import orjson
from flask import Blueprint, Response, g

from proxy.api import response_cache
from proxy.api import responses_shape as shape
from proxy.api.common import authenticate, close, gateway, read_json, routed, start_trace, stream_response
from proxy.api.envelopes import error_response
from proxy.cache.replay import replay_chunks
from proxy.errors import BadRequest, GatewayError, NotFound
from proxy.providers.base import Adapter, Call, native_anthropic
from proxy.store.base import KeyStore, StoreUnavailable
from proxy.store.responses import ResponseTx

log = logging.getLogger("keyrelay")

bp = Blueprint("responses", __name__, url_prefix="/v1")
bp.before_request(authenticate)
bp.after_request(response_cache.add_headers)

STORE_TTL_S = 30 * 86400.0  # how long a stored response is kept (OpenAI keeps them 30 days)
STORE_TIMEOUT_S = 2.0  # a store write waits at most this long for the lock (cooperatively)


def _client_id() -> str:
    client = g.get("client")
    return client.id if client is not None else ""  # '' = anonymous caller of an open gateway


def _load(store: KeyStore, rid: str, client_id: str) -> tuple[dict, list[dict]] | None:
    with store.snapshot() as tx:
        row = tx_responses(tx).load_response(rid, client_id, time.time())
    return None if row is None else (orjson.loads(row[0]), orjson.loads(row[1]))


def _save(store: KeyStore, client_id: str, response: dict, conversation: list[dict]) -> None:
    now = time.time()
    with store.transaction(timeout=STORE_TIMEOUT_S) as tx:
        rtx = tx_responses(tx)
        rtx.purge_responses(now)
        rtx.save_response(response["id"], client_id, now, now + STORE_TTL_S, orjson.dumps(response).decode(),
                          orjson.dumps(conversation).decode())


def tx_responses(tx: object) -> ResponseTx:
    return cast(ResponseTx, tx)  # SqlTx composes SqlResponses


def encode_event(kind: str, data: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


@bp.post("/responses")
def create() -> Response:
    body = read_json()
    shape.validate(body)
    store, client_id = gateway().pool.store, _client_id()
    history: list[dict] = []
    previous = body.get("previous_response_id")
    if previous:
        found = _load(store, previous, client_id)
        if found is None:
            raise BadRequest(f"Previous response with id '{previous}' not found.",
                             param="previous_response_id", code="previous_response_not_found")
        history = found[1]
    req, turn = shape.to_chat_request(body, history)
    trace = start_trace(body["model"], req)
    cached = response_cache.begin(cache_body(body, history))  # caches the chat completion behind it
    relay = gateway().relay
    rid = shape.new_id("resp")
    keep = body.get("store", True)

    def remember(response: dict) -> None:
        """Keep an answer for later turns; the client has it (or is getting it) either way, so a store
        that fails is logged, not turned into an error after the tokens were spent."""
        if not keep or response["status"] not in ("completed", "incomplete"):
            return
        try:
            _save(store, client_id, response, [*history, *turn, shape.assistant_turn(response["output"])])
        except Exception:
            log.exception("storing a response failed", extra={"event": "response_store_error"})

    if body.get("stream"):
        def open_stream(adapter: Adapter, call: Call, r: dict) -> Iterator[dict]:
            if native_anthropic(adapter) is not None and (forced := shape.schema_as_tool(r)) is not None:
                return shape.tool_chunks_as_text(adapter.chat_stream(call, forced))
            return adapter.chat_stream(call, r)

        chunks = iter(replay_chunks(cached.answer)) if cached.hit else \
            cached.keep_chunks(relay.stream(req, trace, open_stream))
        return stream_response(_events(chunks, rid, body, remember), trace)

    def complete(adapter: Adapter, call: Call, r: dict) -> dict:
        if native_anthropic(adapter) is not None and (forced := shape.schema_as_tool(r)) is not None:
            return shape.tool_as_text(adapter.chat(call, forced))
        return adapter.chat(call, r)

    completion = cached.answer if cached.hit else cached.keep(relay.complete(req, trace, complete))
    response = shape.complete(rid, body, completion)  # a hit too is a new response (id, store)
    remember(response)
    return routed(response, trace)


def cache_body(body: dict, history: list[dict]) -> dict:
    """What the response cache keys: the body, with ``previous_response_id`` replaced by the earlier
    turns it resolved to (an id names different turns for different clients; the turns are the request)."""
    if not body.get("previous_response_id"):
        return body
    return {**{k: v for k, v in body.items() if k != "previous_response_id"}, "previous_turns": history}


def _events(chunks: Iterator[dict], rid: str, body: dict,
            remember: Callable[[dict], None]) -> Iterator[bytes]:
    """The typed stream events; a failure after the first event becomes ``response.failed``."""
    events = shape.ResponseEvents(rid, body)
    try:
        for chunk in chunks:
            for event in events.feed(chunk):
                yield encode_event(*event)
        for event in events.finish():
            yield encode_event(*event)
    except GatewayError as err:
        for event in events.fail(err):
            yield encode_event(*event)
    finally:
        close(chunks)
    if events.response is not None:
        remember(events.response)


@bp.errorhandler(StoreUnavailable)
def _store_busy(exc: StoreUnavailable) -> Response:
    log.warning("stored responses unavailable: %s", exc, extra={"event": "response_store_error"})
    return error_response(GatewayError("The gateway cannot read or change stored responses right now; "
                                       "retry shortly.", status=503, code="database_unavailable"))


def _stored(rid: str) -> dict:
    found = _load(gateway().pool.store, rid, _client_id())
    if found is None:
        raise NotFound(f"No response found with id '{rid}'.", param="response_id", code="not_found")
    return found[0]


@bp.get("/responses/<rid>")
def get_response(rid: str) -> Response:
    return Response(orjson.dumps(_stored(rid)), mimetype="application/json")


@bp.delete("/responses/<rid>")
def delete_response(rid: str) -> Response:
    with gateway().pool.store.transaction(timeout=STORE_TIMEOUT_S) as tx:
        deleted = tx_responses(tx).delete_response(rid, _client_id(), time.time())
    if not deleted:
        raise NotFound(f"No response found with id '{rid}'.", param="response_id", code="not_found")
    return Response(orjson.dumps({"id": rid, "object": "response.deleted", "deleted": True}),
                    mimetype="application/json")
