"""/admin: the JSON admin API under /admin/api (bearer token, constant-time compare) and the dashboard.

Every change goes through ``KeyAdmin`` (``gateway().keys``), which writes it and its audit row to the
store in one transaction, so every worker obeys it within the pool's refresh interval. A database
locked past the store's lock wait answers 503 ``database_unavailable`` (nothing changed); the wait is
cooperative, so the worker's other requests keep being served meanwhile. Secrets never leave the
config: a key is named by its id and shown as a masked hint (first 4 + "…" + last 3 characters).
"""
from __future__ import annotations

import hmac
import logging
import os
import signal
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request

from proxy import runtime
from proxy.api import dashboard, key_states
from proxy.api.common import gateway, read_json
from proxy.api.envelopes import error_response
from proxy.config import Config, ConfigError, load_config
from proxy.errors import BadRequest, Forbidden, GatewayError, NotFound, Unauthorized
from proxy.keys import SnapshotError, key_format, key_id
from proxy.keys.runtime import RuntimeKeyError, check_label
from proxy.relay import check_model
from proxy.store.base import StoreUnavailable

log = logging.getLogger("keyrelay")

bp = Blueprint("admin", __name__, url_prefix="/admin")
api = Blueprint("admin_api", __name__, url_prefix="/api")

MAX_REASON = 200


# ---------------------------------------------------------------------------------------------- pure helpers


def mask(secret: str | None) -> str | None:
    """``AIza…x9Q``: first 4 + "…" + last 3 characters; just "…" for short secrets; None if keyless."""
    return key_format.hint(secret)


def hints(config: Config) -> dict[str, str | None]:
    """Key id → masked hint, for every configured key."""
    out: dict[str, str | None] = {}
    for p in config.providers:
        for k in p.keys:
            out[key_id(p.name, k.key)] = mask(k.key)
    return out


def redact(text: str, config: Config) -> str:
    for secret in config.secrets():
        text = text.replace(secret, "[REDACTED]")
    return text


def actor() -> str:
    return f"admin@{request.remote_addr or 'unknown'}"


def key_view(key: dict, hint_of: dict[str, str | None]) -> dict:
    view = {**key, "hint": hint_of.get(key["id"]) or key.get("hint")}  # runtime keys: from the pool
    provider = gateway().config.provider(key.get("provider", ""))
    if provider is not None and not provider.tls.verify:  # the operator turned certificate checks off
        view["tls_verify"] = False
    return view


def one_key(kid: str) -> dict:
    key = gateway().pool.get(kid)
    if key is None:
        raise NotFound(f"No key with id {kid!r}. GET /admin/api/keys lists the keys.", code="key_not_found")
    return key_states.annotate([key_view(key, hints(gateway().config))], gateway())[0]


def change(kid: str, fn: Any, *args: Any) -> Response:
    """Apply one key change (KeyError → 404) and answer with the key as it is now."""
    try:
        fn(kid, *args)
    except KeyError:
        raise NotFound(f"No key with id {kid!r}. GET /admin/api/keys lists the keys.",
                       code="key_not_found") from None
    return jsonify({"key": one_key(kid)})


# nested, so app.register_blueprint(admin.bp) serves both (the dashboard page itself needs no token)
bp.register_blueprint(api)
bp.register_blueprint(dashboard.bp)


@api.before_request
def _authenticate() -> None:
    token = gateway().config.server.admin_token
    if not token:
        raise Forbidden(
            "The admin API is disabled: set server.admin_token (or KEYRELAY_ADMIN_TOKEN with the example "
            "config) to enable it.",
            code="admin_disabled",
        )
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized(
            "Missing or wrong admin token: send 'Authorization: Bearer <admin token>'.",
            code="invalid_admin_token",
            headers={"WWW-Authenticate": "Bearer"},
        )


@api.after_request
def _no_store(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Keyrelay-Worker"] = str(os.getpid())
    return resp


@api.errorhandler(StoreUnavailable)
def _db_busy(exc: StoreUnavailable) -> Response:
    log.warning("admin request failed: %s", exc, extra={"event": "admin_db_error"})
    return error_response(GatewayError(
        "The key database is busy or unusable; nothing was changed. Try again.",
        status=503, code="database_unavailable"))


# ---------------------------------------------------------------------------------------------- keys


@api.get("/keys")
def list_keys() -> Response:
    gw = gateway()
    hint_of = hints(gw.config)
    keys = key_states.annotate([key_view(k, hint_of) for k in gw.pool.describe()], gw)
    return jsonify({"keys": keys, "summary": key_states.summary(gw), "now": time.time(),
                    "worker_pid": os.getpid()})


@api.get("/keys/<kid>")
def get_key(kid: str) -> Response:
    return jsonify({"key": one_key(kid)})


@api.post("/keys/<kid>/disable")
def disable(kid: str) -> Response:
    reason = read_json(required=False).get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("Invalid 'reason': expected a string.", param="reason")
    if reason and len(reason) > MAX_REASON:
        raise BadRequest(f"Invalid 'reason': at most {MAX_REASON} characters.", param="reason")
    return change(kid, gateway().keys.disable, (reason or "").strip(), actor())


@api.post("/keys/<kid>/enable")
def enable(kid: str) -> Response:
    return change(kid, gateway().keys.enable, actor())


@api.post("/keys/<kid>/reset")
def reset(kid: str) -> Response:
    return change(kid, gateway().keys.reset, actor())


@api.patch("/keys/<kid>")
def patch_key(kid: str) -> Response:
    body = read_json()
    unknown = sorted(set(body) - {"weight", "label"})
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}: only 'weight' and 'label' can be changed here.",
                         param=unknown[0])
    if not body:
        raise BadRequest("Missing 'weight' or 'label'.", param="weight", code="missing_required_parameter")
    if "label" in body:
        try:
            check_label(body["label"])
        except RuntimeKeyError as exc:
            raise BadRequest(exc.message, code=exc.code, param="label") from None
    try:
        if "weight" in body:
            change(kid, gateway().keys.set_weight, body["weight"], actor())
    except ValueError as exc:
        raise BadRequest(f"Invalid 'weight': {exc}", param="weight") from None
    if "label" in body:
        change(kid, gateway().runtime.set_label, body["label"], actor())
    return jsonify({"key": one_key(kid)})


@api.post("/keys/<kid>/revalidate")
def revalidate(kid: str) -> Response:
    """Probe the key now through its provider's adapter; a pass restores an invalid key."""
    gw = gateway()
    one_key(kid)  # 404 first
    gw.keys.revalidate(kid, actor())  # audited; also makes it due for the background prober
    pool_key = gw.pool.key(kid)
    if pool_key is None:
        raise GatewayError(f"Key {kid} is not in the running config (retired); it cannot be probed.",
                           status=409, code="key_retired")
    probe = gw.probe(pool_key)
    if probe["error"]:
        probe["error"] = redact(probe["error"], gw.config)
    gw.keys.record_probe(kid, probe["ok"])
    return jsonify({"key": one_key(kid), "probe": probe})


@api.get("/diagnosis")
def diagnosis() -> Response:
    """Why a model can or cannot be served now: each target's keys with their reasons (what a client
    that got 429 ``all_keys_cooling`` or 503 ``no_usable_key`` is not told)."""
    gw = gateway()
    name = check_model(request.args.get("model"))
    targets = gw.relay.resolve(name)
    hint_of = hints(gw.config)
    out = []
    for t in targets:
        keys = [{**k, "hint": hint_of.get(k["id"])} for k in gw.pool.diagnose(t.provider, t.model)]
        out.append({"provider": t.provider, "model": t.model, "usable": any(k["usable"] for k in keys),
                    "keys": keys})
    return jsonify({"model": name, "usable": any(t["usable"] for t in out), "targets": out})


# ------------------------------------------------------------------------------------- audit, snapshot


@api.get("/audit")
def audit() -> Response:
    raw = request.args.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("Invalid 'limit': expected an integer between 1 and 1000.", param="limit")
    return jsonify({"audit": gateway().keys.audit(int(raw))})


@api.get("/snapshot")
def export_snapshot() -> Response:
    resp = jsonify(gateway().keys.export_snapshot())
    resp.headers["Content-Disposition"] = 'attachment; filename="keyrelay-snapshot.json"'
    return resp


@api.post("/snapshot")
def import_snapshot() -> Response:
    doc = read_json()
    try:
        gateway().keys.import_snapshot(doc, actor())
    except SnapshotError as exc:
        raise BadRequest(f"Snapshot refused, nothing changed: {exc}", code="invalid_snapshot") from None
    return jsonify({"imported": len(doc.get("keys", [])), "keys": [
        key_view(k, hints(gateway().config)) for k in gateway().pool.describe()]})


# ---------------------------------------------------------------------------------------------- reload


@api.post("/reload")
def reload() -> Response:
    """Validate the config file, then ask the gunicorn master (SIGHUP) to reload workers gracefully."""
    gw = gateway()
    path = runtime.config_path()
    try:
        new = load_config(path)
    except ConfigError as exc:
        message = redact(str(exc), gw.config)
        raise BadRequest(f"Config not reloaded, the running config keeps serving: {message}",
                         code="invalid_config") from None
    if not str(request.environ.get("SERVER_SOFTWARE", "")).startswith("gunicorn"):
        raise GatewayError("Reload needs gunicorn (keyrelay serve); restart this process instead.",
                           status=409, code="reload_unsupported")
    master = os.getppid()
    gw.keys.audit_event(actor(), "reload", {"config": gw.config.source},
                        {"config": new.source, "providers": [p.name for p in new.providers],
                         "models": [m.name for m in new.models]})
    log.info("config reload requested", extra={"event": "admin_reload", "actor": actor(),
                                               "config": new.source, "master_pid": master})
    os.kill(master, signal.SIGHUP)
    return jsonify({"reloaded": True, "config": new.source, "master_pid": master,
                    "providers": [p.name for p in new.providers], "models": [m.name for m in new.models],
                    "notices": [redact(n, new) for n in new.notices]})


from proxy.api import (  # noqa: E402,F401 - their routes join ``api``
    admin_cache,
    admin_catalog,
    admin_clients,
    admin_history,
    admin_keys,
    admin_usage,
)
