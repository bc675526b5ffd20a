"""Prometheus metrics, correct across gunicorn workers (multiprocess mode).

HTTP metrics come from prometheus-flask-exporter; upstream metrics are recorded per attempt by the
relay; key-state gauges are read from SQLite at scrape time so every worker reports the same truth.
With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py does it) every worker writes its own files and
any worker's /metrics aggregates all of them.
"""

from __future__ import annotations

import os

from flask import Blueprint, Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from proxy.relay import Attempt, Observer

bp = Blueprint("metrics", __name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

UPSTREAM_REQUESTS = Counter(
    "keyrelay_upstream_requests_total", "Upstream attempts by outcome", ["provider", "model", "outcome"]
)
UPSTREAM_LATENCY = Histogram(
    "keyrelay_upstream_latency_seconds",
    "Upstream attempt latency (whole answer, or until the stream ended)",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)


class RelayMetrics(Observer):
    def attempt(self, attempt: Attempt) -> None:
        UPSTREAM_REQUESTS.labels(attempt.provider, attempt.model, attempt.outcome).inc()
        UPSTREAM_LATENCY.labels(attempt.provider, attempt.model).observe(attempt.latency_ms / 1000)


class KeyStateCollector:
    """Key gauges by key id, read from the shared database at scrape time."""

    def __init__(self, pool) -> None:  # noqa: ANN001
        self.pool = pool

    def collect(self):  # noqa: ANN201
        enabled = GaugeMetricFamily(
            "keyrelay_key_enabled", "1 if the operator has the key enabled", labels=["key_id", "provider"]
        )
        usable = GaugeMetricFamily(
            "keyrelay_key_usable", "1 if the key can serve some model now", labels=["key_id", "provider"]
        )
        health = GaugeMetricFamily(
            "keyrelay_key_health", "Rolling health score 0..1", labels=["key_id", "provider"]
        )
        circuit = GaugeMetricFamily(
            "keyrelay_key_circuit_open", "0 closed, 0.5 half-open, 1 open", labels=["key_id", "provider"]
        )
        cooling = GaugeMetricFamily(
            "keyrelay_key_cooling_models",
            "Models this key is cooling down for",
            labels=["key_id", "provider"],
        )
        for key in self.pool.describe():
            labels = [key["id"], key["provider"]]
            enabled.add_metric(labels, 1.0 if key["enabled"] else 0.0)
            usable.add_metric(labels, 1.0 if key.get("usable") else 0.0)
            health.add_metric(labels, float(key["health"]))
            circuit.add_metric(labels, {"closed": 0.0, "half_open": 0.5}.get(key["circuit"], 1.0))
            cooling.add_metric(labels, float(len(key["cooldowns"])))
        yield from (enabled, usable, health, circuit, cooling)


def install(app: Flask, gateway) -> None:  # noqa: ANN001
    multiproc = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    if multiproc:
        from prometheus_flask_exporter.multiprocess import MultiprocessPrometheusMetrics

        MultiprocessPrometheusMetrics(
            app, path=None, defaults_prefix="keyrelay_http", group_by="url_rule", buckets=LATENCY_BUCKETS
        )
    else:
        from prometheus_flask_exporter import PrometheusMetrics

        PrometheusMetrics(
            app,
            path=None,
            defaults_prefix="keyrelay_http",
            group_by="url_rule",
            buckets=LATENCY_BUCKETS,
            registry=CollectorRegistry(auto_describe=True),
        )
    key_state = KeyStateCollector(gateway.pool)

    @bp.get("/metrics")
    def metrics() -> Response:
        registry = CollectorRegistry()
        if multiproc:
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(registry)
        else:
            from prometheus_client import REGISTRY

            registry = REGISTRY
        data = generate_latest(registry)
        if multiproc or key_state not in getattr(registry, "_collector_to_names", {}):
            extra = CollectorRegistry()
            extra.register(key_state)
            data += generate_latest(extra)
        return Response(data, mimetype=CONTENT_TYPE_LATEST)

    app.register_blueprint(bp)
