"""Prometheus metrics of the response cache (imported lazily, like ``proxy.observability.metrics``:
prometheus_client picks its multiprocess mode at import time)."""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily, Metric

REQUESTS = Counter("keyrelay_cache_requests_total",
                   "Cacheable-endpoint requests by what the cache did (result: hit|miss|bypass|refresh)",
                   ["result"])
STORES = Counter("keyrelay_cache_stores_total", "Complete answers stored in the response cache")
EVICTIONS = Counter("keyrelay_cache_evictions_total",
                    "Live entries evicted (least recently used) to stay within max_entries / max_bytes")
STORED_BYTES = Counter("keyrelay_cache_stored_bytes_total", "Bytes of answers written to the cache")


class CacheCollector:
    """``keyrelay_cache_entries`` / ``keyrelay_cache_bytes``, read from the shared store at scrape time."""

    def __init__(self, totals: Callable[[], dict[str, int]]) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        totals = self.totals()
        entries = GaugeMetricFamily("keyrelay_cache_entries", "Entries in the response cache")
        entries.add_metric([], float(totals.get("entries", 0)))
        size = GaugeMetricFamily("keyrelay_cache_bytes", "Bytes of answers in the response cache")
        size.add_metric([], float(totals.get("bytes", 0)))
        yield entries
        yield size
