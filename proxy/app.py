"""The app factory: one Gateway (config, key pool and admin, relay) per worker process, four blueprints."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field

from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider

from proxy.cache.service import ResponseCache
from proxy.catalog.service import Catalog
from proxy.clients.gate import Gate
from proxy.clients.model import Finished
from proxy.config import Config
from proxy.errors import UpstreamError
from proxy.inspect.ring import Inspector
from proxy.keys import Key, KeyAdmin, KeyPool, KeySettings, KeySpec, history_jobs, run_revalidation
from proxy.keys.runtime import RuntimeKeys, vault_for
from proxy.observability.metrics import endpoint as url_rule
from proxy.observability.tracing import Tracing
from proxy.providers import http
from proxy.providers.base import Call, Timeouts
from proxy.relay import Relay, Trace
from proxy.store import backend
from proxy.store.base import KeyStore

log = logging.getLogger("keyrelay")


@dataclass
class Gateway:
    config: Config
    pool: KeyPool
    relay: Relay
    shutting_down: threading.Event = field(default_factory=threading.Event)
    keys: KeyAdmin = field(init=False)  # operator actions, audit, snapshots
    clients: Gate = field(init=False)  # client keys, limits, usage
    catalog: Catalog = field(init=False)  # model catalog: prices, context windows, free models
    tracing: Tracing | None = None  # OpenTelemetry, started with the background work when configured
    runtime: RuntimeKeys = field(init=False)  # upstream keys added / removed at runtime
    cache: ResponseCache = field(init=False)  # the response cache (entries in the store)
    inspector: Inspector = field(init=False)  # captures, the ring, transforms (proxy/inspect/)
    _revalidator: threading.Thread | None = field(default=None, init=False, repr=False)
    _pruner: threading.Thread | None = field(default=None, init=False, repr=False)
    _start_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.keys = KeyAdmin(self.pool)
        self.clients = Gate(self.config, self.pool.store)
        self.catalog = self.relay.catalog or Catalog(self.config, self.pool.store)
        self.relay.catalog = self.catalog
        self.clients.usage.fallback_price = self.catalog.price  # config prices still win
        self.runtime = RuntimeKeys.for_config(self.pool, self.config)
        self.cache = ResponseCache(self.config, self.pool.store)
        self.inspector = Inspector(self.config, self.pool.store)

    def close(self) -> None:
        """Flush what is batched (usage records, captures, key counters, cache uses, spans); release the
        database."""
        if self.tracing is not None:
            self.tracing.close()
        self.catalog.close()
        self.clients.close()
        self.cache.close()
        self.inspector.close()
        self.pool.close()

    def probe(self, key: Key) -> dict:
        """Does this key work (again)? A cheap call through its provider's adapter:
        ``{"ok": bool, "outcome": str, "error": str | None}`` (the error never contains a secret)."""
        provider, adapter = self.relay.adapters[key.provider]
        t = provider.timeouts
        deadline = time.monotonic() + self.config.retry.deadline_s
        call = Call(provider.base_url, "", key.secret, Timeouts(t.connect, t.first_byte, t.idle, deadline),
                    provider.headers, http.transport_for(provider))
        try:
            adapter.probe(call)
        except UpstreamError as exc:
            return {"ok": False, "outcome": exc.outcome, "error": exc.message}
        except Exception as exc:  # a broken probe is a failed probe; never echo the exception text
            return {"ok": False, "outcome": "error", "error": type(exc).__name__}
        return {"ok": True, "outcome": "ok", "error": None}

    def start_background(self) -> None:
        """Start this worker's background work, once: the key pool's counter flusher, the revalidation
        of invalid keys and the key history's pruning (greenlets under gunicorn's gevent workers).
        gunicorn's ``post_worker_init`` calls it, ``wsgi.py`` on the first request for other servers;
        ``create_app`` itself starts nothing."""
        if self._revalidator is not None:  # wsgi.py calls this before every request
            return
        with self._start_lock:
            if self._revalidator is not None:
                return
            interval = min(5.0, self.config.key_manager.revalidate_interval_s)
            self._revalidator = threading.Thread(
                target=run_revalidation,
                args=(self.keys, lambda key: self.probe(key)["ok"], self.shutting_down, interval),
                name="keyrelay-revalidate",
                daemon=True,
            )
            self._pruner = threading.Thread(target=history_jobs.run_pruning,
                                            args=(self.pool.store, self.shutting_down),
                                            name="keyrelay-history-prune", daemon=True)
            listen = getattr(self.pool.store, "start_listening", None)  # PostgreSQL: LISTEN for changes
            if listen is not None:
                listen()
            self.pool.start_flusher()
            self.clients.start()
            self.catalog.start()  # background refresh; the gateway serves without it (no network)
            if self.tracing is None:
                self.tracing = Tracing.from_config(self.config.tracing)
            self.cache.start()
            self.inspector.start()
            self._revalidator.start()
            self._pruner.start()  # key history past its retention (proxy/keys/history_jobs.py)


def key_specs(config: Config) -> list[KeySpec]:
    specs = []
    for p in config.providers:
        if p.keys:
            specs += [KeySpec(p.name, k.key, k.weight, k.label, k.project) for k in p.keys]
        else:
            specs.append(KeySpec(p.name, None))
    return specs


def key_settings(config: Config) -> KeySettings:
    km = config.key_manager
    return KeySettings(
        default_cooldown_s=km.default_cooldown_s,
        daily_reset_tz=km.daily_reset_tz,
        breaker_failures=km.breaker_failures,
        breaker_open_s=km.breaker_open_s,
        revalidate_interval_s=km.revalidate_interval_s,
        max_cooldown_s=km.max_cooldown_s,
        pacing=km.pacing,
        quota_limits={p.name: p.limits for p in config.providers if p.limits},
        refresh_interval_s=0.0,  # look at PRAGMA data_version on every acquire (~4 us): other workers'
        # transitions are obeyed at once, not after a refresh interval
    )


def open_config_store(config: Config) -> KeyStore:
    """The store ``server.database`` names (SQLite file or PostgreSQL URL), migrated."""
    return backend.open_store(config.server.database, lock_wait_s=key_settings(config).busy_timeout_ms / 1000,
                              pool_size=config.server.database_pool_size)


def create_app(config: Config) -> Flask:
    """Build the WSGI app for one worker: migrate the database, sync keys, register blueprints.

    Pure: no thread is started and global logging is left alone (the entry points configure logging and
    call ``Gateway.start_background()`` in the process that serves). ``app.extensions["keyrelay"]`` is
    the Gateway; ``gateway.pool.close()`` releases the database."""
    pool = KeyPool(open_config_store(config), key_settings(config), start_flusher=False,
                   vault=vault_for(config), owns_store=True)
    pool.sync(key_specs(config))
    for p in config.providers:  # each reads its proxy environment now, and warns of tls.verify: false
        http.transport_for(p)

    app = Flask("keyrelay")
    app.config["MAX_CONTENT_LENGTH"] = config.server.max_body_bytes
    if config.server.trusted_proxies:  # behind nginx: the client address comes from X-Forwarded-For
        from werkzeug.middleware.proxy_fix import ProxyFix

        hops = config.server.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    if isinstance(app.json, DefaultJSONProvider):  # Flask's default provider, the one this app has
        app.json.sort_keys = False
    from proxy.observability import metrics

    gw = Gateway(config, pool, Relay(config, pool, observer=metrics.RelayMetrics()))
    app.extensions["keyrelay"] = gw

    from proxy.api import (
        admin,
        anthropic,
        client_key,
        envelopes,
        gemini_native,
        guard,
        inspect,
        openai,
        probes,
    )
    from proxy.api import responses as responses_api

    envelopes.install(app)
    app.register_blueprint(inspect.bp)
    app.register_blueprint(openai.bp)
    app.register_blueprint(client_key.bp)
    app.register_blueprint(anthropic.bp)
    app.register_blueprint(responses_api.bp)
    app.register_blueprint(gemini_native.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(probes.bp)
    metrics.install(app, gw)
    _install_request_log(app)
    guard.install(app, config.server)  # after the request log: a refused request is logged with its id
    return app


DATA_PLANE = ("proxy", "anthropic", "responses", "gemini")  # the blueprints whose POSTs are metered


def _request_done(entry: dict, started: float, state: dict) -> None:
    """The end of a request (for a stream: of its last byte): the log line, and for the data plane the
    settlement of its admission and its usage record."""
    latency_ms = (time.monotonic() - started) * 1000
    trace = state.get("trace")
    if state.get("exchange") is not None:  # the inspector's capture, the bodies for the log line
        state["gateway"].inspector.done(state["exchange"], trace, entry)
    _log_request(entry, latency_ms, trace)
    if state.get("spans") is not None:
        state["spans"].end(entry["status"], entry.get("client_id"), state.get("model"))
    if entry.pop("_metered", False):
        try:
            state["gateway"].clients.finish(_finished(entry, latency_ms, trace, state))
        except Exception:  # accounting must never break an answer that was already given
            log.exception("usage accounting failed", extra={"event": "usage_error",
                                                            "request_id": entry["request_id"]})


def _finished(entry: dict, latency_ms: float, trace: Trace | None, state: dict) -> Finished:
    route = trace.route if trace else None
    return Finished(
        at=state["wall_started"], request_id=entry["request_id"], endpoint=entry["path"],
        client=state.get("client"), model=state.get("model"), provider=route.provider if route else None,
        upstream_model=route.model if route else None, key_id=trace.key_id if trace else None,
        status=entry["status"], outcome=trace.attempts[-1].outcome if trace and trace.attempts else None,
        usage=trace.usage if trace else None, latency_ms=latency_ms,
        first_byte_ms=trace.first_byte_ms if trace else None, stream=entry["_stream"],
        admission=state.get("admission"), streamed_chars=trace.streamed_chars if trace else 0,
        cached=bool(trace and trace.cached))


def _log_request(entry: dict, latency_ms: float, trace: Trace | None) -> None:
    """The request's log line: INFO, WARNING for a 4xx (404s rate-limited), ERROR for a 5xx; a request
    that failed over first logs each attempt. A stream logs ``ttfb_ms`` (until the upstream's first
    chunk) and ``duration_ms`` (until its last byte)."""
    status = entry["status"]
    if status == 404 and not _not_found.allow(time.monotonic()):
        return
    stream = entry.get("_stream")
    entry = {k: v for k, v in entry.items() if not k.startswith("_")}
    entry["latency_ms"] = round(latency_ms, 2)
    if trace is not None:
        entry.update(
            provider=trace.route.provider if trace.route else None,
            key_id=trace.key_id,
            attempts=len(trace.attempts),
            upstream_latency_ms=round(trace.first_byte_ms, 2) if trace.first_byte_ms else None,
        )
        if stream:
            entry.update(ttfb_ms=entry["upstream_latency_ms"], duration_ms=entry["latency_ms"])
        if trace.cached:
            entry["cached"] = True  # answered from the response cache
        if trace.attempts and trace.attempts[-1].outcome not in ("ok", "client"):
            entry["upstream_error"] = trace.attempts[-1].error
        if len(trace.attempts) > 1:
            for n, a in enumerate(trace.attempts, 1):
                log.log(logging.INFO if a.outcome == "ok" else logging.WARNING,
                        f"attempt {n}/{len(trace.attempts)}: {a.provider}/{a.model} with {a.key_id}: "
                        f"{a.outcome}", extra={
                            "event": "upstream_attempt", "request_id": entry["request_id"], "attempt": n,
                            "key_id": a.key_id, "provider": a.provider, "model": a.model,
                            "outcome": a.outcome, "status": a.status, "latency_ms": round(a.latency_ms, 2),
                            "error": a.error})
    if _not_found.suppressed and status == 404:
        entry["suppressed_404s"], _not_found.suppressed = _not_found.suppressed, 0
    level = logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
    log.log(level, "request", extra=entry)


class _RateLimit:
    """At most ``burst`` lines per ``per_s`` seconds; counts what it held back (said in the next line)."""

    def __init__(self, burst: int, per_s: float) -> None:
        self.burst, self.per_s = burst, per_s
        self.window_start, self.used, self.suppressed = -math.inf, 0, 0

    def allow(self, now: float) -> bool:
        if now - self.window_start >= self.per_s:
            self.window_start, self.used = now, 0
        self.used += 1
        if self.used > self.burst:
            self.suppressed += 1
            return False
        return True


_not_found = _RateLimit(burst=10, per_s=60.0)  # a scanner's 404s must not flood the log


def _install_request_log(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started, g.wall_started = time.monotonic(), time.time()
        rid = request.headers.get("X-Request-ID", "")
        # echoed in a response header: printable ASCII only, so it is safe there by construction
        g.request_id = rid if 0 < len(rid) <= 128 and rid.isascii() and rid.isprintable() \
            else os.urandom(16).hex()
        tracing = app.extensions["keyrelay"].tracing
        if tracing is not None and request.path not in ("/healthz", "/readyz", "/metrics"):
            g.spans = tracing.start_request(request.method, url_rule(request), request.headers)

    @app.after_request
    def _finish(resp: Response) -> Response:
        state = g._get_current_object()
        resp.headers["X-Request-ID"] = state.get("request_id", "")
        if request.path in ("/healthz", "/readyz", "/metrics"):
            return resp
        entry = {
            "event": "request",
            "request_id": state.get("request_id"),
            "method": request.method,
            "path": request.path,
            "client": request.remote_addr,
            "status": resp.status_code,
            "model": state.get("model"),
        }
        if state.get("error_code"):
            entry["error_code"] = state.get("error_code")
        client = state.get("client")
        if client is not None:
            entry["client_id"] = client.id
        admission = state.get("admission")
        if admission is not None:
            resp.headers.extend(admission.headers)  # set nowhere else: appended, no search for old ones
        if request.blueprint in DATA_PLANE and request.method == "POST" and "wall_started" in state:
            entry.update(_metered=True, _stream=resp.is_streamed)
        exchange = app.extensions["keyrelay"].inspector.response(state, request, resp) \
            if request.blueprint in DATA_PLANE and request.method == "POST" else None
        done = {"trace": state.get("trace"), "client": client, "model": state.get("model"),
                "spans": state.get("spans"),
                "admission": admission, "wall_started": state.get("wall_started"),
                "gateway": app.extensions["keyrelay"], "exchange": exchange}
        started = state.get("started", time.monotonic())
        if resp.is_streamed:  # log when the stream has ended, with its whole story
            resp.call_on_close(lambda: _request_done(entry, started, done))
        else:
            _request_done(entry, started, done)
        return resp
