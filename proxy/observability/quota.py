"""Quota gauges from the admin listing of keys (pure): per key, model and window (rpm / tpm / rpd / tpd)
the known limit and what the key's scope used of it."""
from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily, Metric


def key_quota_metrics(keys: list[dict]) -> list[Metric]:
    limit = GaugeMetricFamily("keyrelay_key_quota_limit", "Known quota limit of the key's scope "
                              "(configured or learned from the upstream)", labels=["key", "model", "window"])
    used = GaugeMetricFamily("keyrelay_key_quota_used", "What the key's scope used of that limit in the "
                             "current minute or day", labels=["key", "model", "window"])
    for key in keys:
        for model, windows in sorted((key.get("limits") or {}).items()):
            for window, w in sorted(windows.items()):
                labels = [key["id"], model, window]
                limit.add_metric(labels, float(w["limit"]))
                used.add_metric(labels, float(w["used"]))
    return [limit, used]
