"""Prometheus metrics, correct across gunicorn workers (multiprocess mode).

* HTTP: ``keyrelay_http_requests_total{method,endpoint,status}`` and, from prometheus-flask-exporter,
  ``keyrelay_http_request_duration_seconds{method,endpoint,status}`` (``endpoint`` is the Flask URL rule,
  "unmatched" for unknown paths, so clients cannot mint label values). The exporter's
  ``keyrelay_http_request_total{method,status}`` (singular, no endpoint) is deprecated: it stays for
  this release only.
* Upstream, recorded by the relay through the Observer hooks: attempts by provider/model/outcome,
  latency and time-to-first-byte histograms, retries (next key) and failovers (next target), tokens
  in/out by model.
* Per key: ``keyrelay_key_requests_total{key,provider,model,outcome}`` (every attempt), and gauges by
  key id read from the store at scrape time, so every worker reports the same truth, with
  ``keyrelay_key_info{key_id,provider,label}`` carrying the operator's label.
* ``keyrelay_build_info{version}``: always 1.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py does it before forking and cleans up per worker)
every worker writes its own files and any worker's /metrics aggregates all of them. Labels carry key
ids, provider and model names only, never a secret.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, Response, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from proxy import __version__
from proxy.config import TargetConfig
from proxy.observability.quota import key_quota_metrics
from proxy.relay import Attempt, Observer

if TYPE_CHECKING:
    from proxy.app import Gateway
    from proxy.keys import KeyPool

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MAX_MODEL_LABELS = 200  # per process; further distinct (pass-through) model names count as "other"
MAX_LABEL_LEN = 100
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

UPSTREAM_REQUESTS = Counter(
    "keyrelay_upstream_requests_total", "Upstream attempts by outcome", ["provider", "model", "outcome"]
)
UPSTREAM_LATENCY = Histogram(
    "keyrelay_upstream_latency_seconds",
    "Upstream attempt latency (whole answer, or until the stream ended)",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
UPSTREAM_TTFB = Histogram(
    "keyrelay_upstream_ttfb_seconds",
    "Time until the upstream's answer (or first stream chunk) arrived",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
RETRIES = Counter(
    "keyrelay_upstream_retries_total",
    "Attempts that followed a failure with another key of the same target",
    ["provider", "model"],
)
FAILOVERS = Counter(
    "keyrelay_upstream_failovers_total",
    "Moves to the next target of a model after the previous one failed (labels: the new target)",
    ["provider", "model"],
)
KEY_REQUESTS = Counter(
    "keyrelay_key_requests_total", "Upstream attempts by key id (never a secret), provider, model, outcome",
    ["key", "provider", "model", "outcome"],
)
HTTP_REQUESTS = Counter(
    "keyrelay_http_requests_total", "HTTP requests answered, by method, endpoint (the URL rule) and status",
    ["method", "endpoint", "status"],
)
TOKENS = Counter("keyrelay_tokens_total", "Tokens reported by upstreams", ["provider", "model", "direction"])
CLIENT_LIMITED = Counter(
    "keyrelay_client_limited_total",
    "Client requests refused by a limit (client: id; limit: rpm|tpm|concurrency|budget|quota, or"
    " rpm:<glob> / tpm:<glob> for a client's per-model limit)",
    ["client", "limit"],
)

# per client (label: the client id, "anonymous" on an open gateway; never a secret), recorded by UsageLog
CLIENT_REQUESTS = Counter("keyrelay_client_requests_total", "Data-plane requests by client, model and status",
                          ["client", "model", "status"])
CLIENT_TOKENS = Counter("keyrelay_client_tokens_total",
                        "Tokens by client and model (kind: prompt|completion|cached|reasoning)",
                        ["client", "model", "kind"])
CLIENT_COST = Counter("keyrelay_client_cost_usd_total", "Cost in USD from the configured prices",
                      ["client", "model"])
USAGE_UNPRICED = Counter("keyrelay_usage_unpriced_total",
                         "Requests that used tokens of a model with no price (cost_usd null)", ["model"])
USAGE_DROPPED = Counter("keyrelay_usage_dropped_total",
                        "Usage records dropped because the unflushed queue was full (database locked)")
LIMITS_DEGRADED = Counter("keyrelay_limits_unchecked_total",
                          "Keyed requests admitted without a limit check: the database was unreachable")
STORE_DROPPED = Counter("keyrelay_store_writes_dropped_total",
                        "Writes dropped: too many waited for an unavailable database (key_state, settlement)",
                        ["kind"])
CATALOG_REFRESH = Counter("keyrelay_catalog_refresh_total",
                          "Model catalog refreshes by source and result (ok, not_modified, error)",
                          ["source", "result"])


def token_counts(usage: dict) -> tuple[int, int]:
    """(input, output) tokens from an OpenAI (prompt/completion) or Anthropic (input/output) usage dict."""

    def num(*names: str) -> int:
        for name in names:
            value = usage.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return int(value)
        return 0

    return num("prompt_tokens", "input_tokens"), num("completion_tokens", "output_tokens")


class _ModelLabels:
    """Bounded, sanitised model label values (pass-through names come from clients)."""

    def __init__(self, limit: int = MAX_MODEL_LABELS) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self.cache: dict[str, str] = {}  # raw name -> label, so the hot path does one dict lookup
        self.lock = threading.Lock()

    def __call__(self, model: str) -> str:
        label = self.cache.get(model)
        if label is not None:
            return label
        value = "".join(c if c.isprintable() else "?" for c in str(model))[:MAX_LABEL_LEN]
        with self.lock:
            if value not in self.seen and len(self.seen) < self.limit:
                self.seen.add(value)
            label = value if value in self.seen else "other"
            if len(self.cache) < 4 * self.limit:
                self.cache[model] = label
        return label


model_label = _ModelLabels()
_CHILDREN: dict[tuple, Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached (``.labels()`` takes a lock and checks each value: a few µs,
    and the hot path makes several per request); the values must be bounded already (key and client
    ids, ``model_label`` names, statuses)."""
    key = (metric, *labels)
    found = _CHILDREN.get(key)
    if found is None:
        found = metric.labels(*labels)
        if len(_CHILDREN) < 64 * MAX_MODEL_LABELS:
            _CHILDREN[key] = found
    return found


class RelayMetrics(Observer):
    """The relay's Observer: upstream counters and histograms (labelled children cached: ``child``)."""

    def _child(self, metric: Any, provider: str, model: str, *extra: str) -> Any:
        return child(metric, provider, model_label(model), *extra)

    def attempt(self, attempt: Attempt) -> None:
        self._child(UPSTREAM_REQUESTS, attempt.provider, attempt.model, attempt.outcome).inc()
        model = model_label(attempt.model)
        child(KEY_REQUESTS, attempt.key_id, attempt.provider, model, attempt.outcome).inc()
        self._child(UPSTREAM_LATENCY, attempt.provider, attempt.model).observe(
            max(attempt.latency_ms, 0.0) / 1000
        )

    def first_byte(self, target: TargetConfig, seconds: float) -> None:
        self._child(UPSTREAM_TTFB, target.provider, target.model).observe(max(seconds, 0.0))

    def retry(self, kind: str, target: TargetConfig) -> None:
        self._child(FAILOVERS if kind == "target" else RETRIES, target.provider, target.model).inc()

    def usage(self, target: TargetConfig, usage: dict) -> None:
        tokens_in, tokens_out = token_counts(usage)
        if tokens_in:
            self._child(TOKENS, target.provider, target.model, "in").inc(tokens_in)
        if tokens_out:
            self._child(TOKENS, target.provider, target.model, "out").inc(tokens_out)


CIRCUIT_VALUES = {"closed": 0.0, "half_open": 0.5, "open": 1.0}


def key_state_metrics(keys: list[dict]) -> list[Metric]:
    """Gauges for the admin listing of keys (pure: the same listing gives the same output)."""

    def family(name: str, doc: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, doc, labels=["key_id", "provider"])

    enabled = family("keyrelay_key_enabled", "1 if the operator has the key enabled")
    usable = family("keyrelay_key_usable", "1 if the key can serve some model now")
    invalid = family("keyrelay_key_invalid", "1 if the upstream rejected the key as invalid")
    health = family("keyrelay_key_health", "Rolling health score 0..1")
    circuit = family("keyrelay_key_circuit_state", "Circuit breaker: 0 closed, 0.5 half-open, 1 open")
    cooling = family("keyrelay_key_cooling_models", "Models this key is cooling down for")
    weight = family("keyrelay_key_weight", "Selection weight (config or operator override)")
    info = GaugeMetricFamily("keyrelay_key_info", "Always 1: the key's operator label",
                             labels=["key_id", "provider", "label"])
    for key in keys:
        info.add_metric([key["id"], key["provider"], key.get("label") or ""], 1.0)
        labels = [key["id"], key["provider"]]
        enabled.add_metric(labels, 1.0 if key["enabled"] else 0.0)
        usable.add_metric(labels, 1.0 if key.get("usable") else 0.0)
        invalid.add_metric(labels, 1.0 if key.get("status") == "invalid" else 0.0)
        health.add_metric(labels, float(key["health"]))
        circuit.add_metric(labels, CIRCUIT_VALUES.get(key["circuit"], 1.0))
        cooling.add_metric(labels, float(len(key["cooldowns"])))
        weight.add_metric(labels, float(key["weight"]))
    return [info, enabled, usable, invalid, health, circuit, cooling, weight]


class KeyStateCollector:
    """Key gauges by key id, read from the shared database at scrape time."""

    def __init__(self, pool: KeyPool) -> None:
        self.pool = pool

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily("keyrelay_build_info", "Always 1: the running keyrelay version",
                                  labels=["version"])
        build.add_metric([__version__], 1.0)
        yield build
        keys = self.pool.describe()
        yield from key_state_metrics(keys)
        yield from key_quota_metrics(keys)


def endpoint(request: Request) -> str:
    """The HTTP metrics' endpoint label: the URL rule, never the raw path."""
    rule = request.url_rule
    return rule.rule if rule is not None else "unmatched"


def install(app: Flask, gateway: Gateway) -> None:
    """HTTP metrics on ``app`` and the /metrics endpoint (aggregated over workers in multiprocess mode)."""
    multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    options = dict(path=None, defaults_prefix="keyrelay", group_by=endpoint, buckets=LATENCY_BUCKETS)
    if multiproc:
        from prometheus_client import multiprocess
        from prometheus_flask_exporter.multiprocess import MultiprocessPrometheusMetrics

        MultiprocessPrometheusMetrics(app, **options)
        registries = [CollectorRegistry()]
        multiprocess.MultiProcessCollector(registries[0])
    else:  # one process (tests, plain Flask): this app's HTTP metrics + the upstream metrics
        from prometheus_client import REGISTRY
        from prometheus_flask_exporter import PrometheusMetrics

        http = PrometheusMetrics(app, registry=CollectorRegistry(auto_describe=True), **options)
        registries = [http.registry, REGISTRY]
    http_children: dict[tuple[str, str, int], Any] = {}

    @app.after_request
    def _count(resp: Response) -> Response:
        method = request.method if request.method in HTTP_METHODS else "other"  # clients send any token
        key = (method, endpoint(request), resp.status_code)
        child = http_children.get(key)
        if child is None:  # bounded: methods × URL rules × statuses
            child = http_children[key] = HTTP_REQUESTS.labels(key[0], key[1], str(key[2]))
        child.inc()
        return resp

    key_state = CollectorRegistry()
    key_state.register(KeyStateCollector(gateway.pool))
    from proxy.cache.metrics import CacheCollector

    key_state.register(CacheCollector(gateway.cache.totals))
    registries.append(key_state)

    def metrics() -> Response:
        resp = Response(b"".join(generate_latest(r) for r in registries), mimetype=CONTENT_TYPE_LATEST)
        resp.headers["X-Keyrelay-Worker"] = str(os.getpid())
        resp.headers["Cache-Control"] = "no-store"
        return resp

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
