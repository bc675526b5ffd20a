"""The JSON snapshot of all key state: build, checksum and validate (pure; ``KeyAdmin`` does the I/O).

Format (version 1)::

    {"format": "keyrelay.snapshot", "version": 1, "exported_at": "<ISO-8601 UTC>",
     "keys": [<entry>, ...sorted by id], "checksum": "<sha256 hex>"}

``checksum`` is sha256 of the canonical JSON (sorted keys, no spaces, ASCII, no NaN) of the document
without ``checksum`` and without ``exported_at``: the export time is informational, so two exports
of the same state carry the same checksum, and a round trip (export → fresh db → sync → import →
export) yields a document identical apart from ``exported_at``. No secret is ever part of it.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from datetime import UTC, datetime
from typing import Any

from ..store.base import MAX_COOLDOWNS_PER_KEY
from . import breaker
from .ids import ID_PATTERN
from .state import STATUS_INVALID, STATUS_OK, KeyState

FORMAT = "keyrelay.snapshot"
VERSION = 1
MAX_WEIGHT = 1000.0
MAX_KEYS = 10_000
MAX_COUNT = 2**53  # counters: exact in JSON and within SQLite's INTEGER
MAX_FAILURES = 1_000_000
MAX_TEXT = 1000  # label, reasons, last error
MAX_MODEL_LEN = 256
CLOCK_SKEW_S = 3600.0  # event times (last used, probed, ...) may be at most this far in the future
DEFAULT_MAX_COOLDOWN_S = 172800.0

_ENTRY_FIELDS = {
    "id", "provider", "label", "retired", "enabled", "disabled_reason", "status", "status_reason",
    "status_at", "weight", "weight_override", "health", "health_at", "circuit", "cooldowns", "counters",
    "last_error", "last_error_at", "last_used_at", "last_probe_at",
}
_CIRCUIT_FIELDS = {"state", "open_until", "failures", "last_failure_at", "probe_at"}
_COUNTER_FIELDS = {"requests", "errors", "latency_ms_total", "latency_samples"}


class SnapshotError(ValueError):
    """The document is not a valid keyrelay snapshot; nothing was changed."""


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def checksum(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k not in ("checksum", "exported_at")}
    return hashlib.sha256(canonical(body).encode("ascii")).hexdigest()


def entry(k: KeyState, cooldowns: dict[str, float]) -> dict:
    b = k.breaker
    return {
        "id": k.id, "provider": k.provider, "label": k.label, "retired": k.retired,
        "enabled": k.enabled, "disabled_reason": k.disabled_reason,
        "status": k.status, "status_reason": k.status_reason, "status_at": k.status_at,
        "weight": k.weight, "weight_override": k.weight_override,
        "health": k.health, "health_at": k.health_at,
        "circuit": {"state": b.state, "open_until": b.open_until, "failures": b.failures,
                    "last_failure_at": b.last_failure_at, "probe_at": b.probe_at},
        "cooldowns": dict(sorted(cooldowns.items())),
        "counters": {"requests": k.requests, "errors": k.errors, "latency_ms_total": k.latency_ms_total,
                     "latency_samples": k.latency_samples},
        "last_error": k.last_error, "last_error_at": k.last_error_at,
        "last_used_at": k.last_used_at, "last_probe_at": k.last_probe_at,
    }


def document(entries: list[dict], now: float) -> dict:
    doc = {
        "format": FORMAT, "version": VERSION,
        "exported_at": datetime.fromtimestamp(now, UTC).isoformat(),
        "keys": sorted(entries, key=lambda e: e["id"]),
    }
    doc["checksum"] = checksum(doc)
    return doc


# --- validation -------------------------------------------------------------------------------

def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _num(where: str, v: Any, *, lo: float | None = None, hi: float | None = None, null: bool = False,
         integer: bool = False) -> None:
    if v is None and null:
        return
    ok = (isinstance(v, int) and not isinstance(v, bool)) if integer else _is_num(v)
    if not ok:
        kind = "an integer" if integer else "a finite number"
        raise SnapshotError(f"{where} must be {kind}{' or null' if null else ''}, got {v!r}")
    if lo is not None and v < lo or hi is not None and v > hi:
        raise SnapshotError(f"{where} must be in [{lo}, {hi}], got {v!r}")


def _str(where: str, v: Any, *, null: bool = False) -> None:
    if v is None and null:
        return
    if not isinstance(v, str):
        raise SnapshotError(f"{where} must be a string{' or null' if null else ''}, got {type(v).__name__}")


def _bool(where: str, v: Any) -> None:
    if not isinstance(v, bool):
        raise SnapshotError(f"{where} must be true or false, got {v!r}")


def _fields(where: str, obj: Any, expected: set[str]) -> None:
    if not isinstance(obj, dict):
        raise SnapshotError(f"{where} must be an object")
    missing, extra = expected - obj.keys(), obj.keys() - expected
    if missing:
        raise SnapshotError(f"{where} is missing {', '.join(sorted(missing))}")
    if extra:
        raise SnapshotError(f"{where} has unknown field(s) {', '.join(sorted(extra))}")


def _not_after(where: str, v: float | None, limit: float, now: float, why: str) -> None:
    if v is not None and v > limit:
        raise SnapshotError(f"{where} is {v - now:.0f}s in the future, more than {why}")


def _validate_entry(i: int, e: Any, now: float, max_cooldown_s: float) -> None:
    w = f"keys[{i}]"
    _fields(w, e, _ENTRY_FIELDS)
    if not isinstance(e["id"], str) or not ID_PATTERN.match(e["id"]):
        raise SnapshotError(f"{w}.id must look like k_0123456789, got {e['id']!r}")
    _str(f"{w}.provider", e["provider"])
    if not e["provider"]:
        raise SnapshotError(f"{w}.provider must not be empty")
    for name in ("label", "disabled_reason", "status_reason", "last_error"):
        _str(f"{w}.{name}", e[name], null=True)
        if e[name] is not None and len(e[name]) > MAX_TEXT:
            raise SnapshotError(f"{w}.{name} must be at most {MAX_TEXT} characters, got {len(e[name])}")
    for name in ("retired", "enabled"):
        _bool(f"{w}.{name}", e[name])
    if e["status"] not in (STATUS_OK, STATUS_INVALID):
        raise SnapshotError(f"{w}.status must be 'ok' or 'invalid', got {e['status']!r}")
    for name in ("status_at", "last_error_at", "last_used_at", "last_probe_at"):
        _num(f"{w}.{name}", e[name], lo=0, null=True)
    _num(f"{w}.weight", e["weight"], lo=0, hi=MAX_WEIGHT)
    _num(f"{w}.weight_override", e["weight_override"], lo=0, hi=MAX_WEIGHT, null=True)
    if e["weight_override"] is not None and e["weight_override"] <= 0:
        raise SnapshotError(f"{w}.weight_override must be > 0")
    _num(f"{w}.health", e["health"], lo=0, hi=1)
    _num(f"{w}.health_at", e["health_at"], lo=0)
    c = e["circuit"]
    _fields(f"{w}.circuit", c, _CIRCUIT_FIELDS)
    if c["state"] not in breaker.STATES:
        raise SnapshotError(f"{w}.circuit.state must be one of {', '.join(breaker.STATES)},"
                            f" got {c['state']!r}")
    _num(f"{w}.circuit.failures", c["failures"], lo=0, hi=MAX_FAILURES, integer=True)
    for name in ("open_until", "last_failure_at", "probe_at"):
        _num(f"{w}.circuit.{name}", c[name], lo=0, null=True)
    cooldown_limit, cooldown_why = now + max_cooldown_s, f"key_manager.max_cooldown_s ({max_cooldown_s:g}s)"
    event_limit, event_why = now + CLOCK_SKEW_S, f"the allowed clock skew ({CLOCK_SKEW_S:g}s)"
    _not_after(f"{w}.circuit.open_until", c["open_until"], cooldown_limit, now, cooldown_why)
    for name in ("last_failure_at", "probe_at"):
        _not_after(f"{w}.circuit.{name}", c[name], event_limit, now, event_why)
    for name in ("status_at", "last_error_at", "last_used_at", "last_probe_at", "health_at"):
        _not_after(f"{w}.{name}", e[name], event_limit, now, event_why)
    if not isinstance(e["cooldowns"], dict):
        raise SnapshotError(f"{w}.cooldowns must be an object of model -> epoch seconds")
    if len(e["cooldowns"]) > MAX_COOLDOWNS_PER_KEY:
        raise SnapshotError(f"{w}.cooldowns has {len(e['cooldowns'])} models, at most"
                            f" {MAX_COOLDOWNS_PER_KEY} are kept per key")
    for model, until in e["cooldowns"].items():
        if not model:
            raise SnapshotError(f"{w}.cooldowns has an empty model name")
        if len(model) > MAX_MODEL_LEN:
            raise SnapshotError(f"{w}.cooldowns has a model name longer than {MAX_MODEL_LEN} characters")
        _num(f"{w}.cooldowns[{model!r}]", until, lo=0)
        _not_after(f"{w}.cooldowns[{model!r}]", until, cooldown_limit, now, cooldown_why)
    cnt = e["counters"]
    _fields(f"{w}.counters", cnt, _COUNTER_FIELDS)
    for name in ("requests", "errors", "latency_samples"):
        _num(f"{w}.counters.{name}", cnt[name], lo=0, hi=MAX_COUNT, integer=True)
    _num(f"{w}.counters.latency_ms_total", cnt["latency_ms_total"], lo=0, hi=float(MAX_COUNT))
    for name in ("errors", "latency_samples"):
        if cnt[name] > cnt["requests"]:
            raise SnapshotError(f"{w}.counters.{name} ({cnt[name]}) exceeds counters.requests"
                                f" ({cnt['requests']})")


def validate(doc: Any, *, now: float | None = None,
             max_cooldown_s: float = DEFAULT_MAX_COOLDOWN_S) -> list[dict]:
    """Check a whole document before anything is applied; returns its key entries.

    Raises SnapshotError naming the first problem (format, version, checksum, a field's type/range).
    Cooldowns and open circuits may end at most ``max_cooldown_s`` after ``now`` (refused, not
    clamped: a snapshot asking for more is wrong, and the operator should see where).
    """
    now = time.time() if now is None else now
    if not isinstance(doc, dict):
        raise SnapshotError("snapshot must be a JSON object")
    if doc.get("format") != FORMAT:
        raise SnapshotError(f"not a keyrelay snapshot (format must be {FORMAT!r}, got {doc.get('format')!r})")
    version = doc.get("version")
    if version != VERSION or isinstance(version, bool):
        raise SnapshotError(f"unsupported snapshot version {version!r}"
                            f" (this keyrelay reads version {VERSION})")
    _fields("snapshot", doc, {"format", "version", "exported_at", "keys", "checksum"})
    _str("snapshot.exported_at", doc["exported_at"])
    if not isinstance(doc["checksum"], str):
        raise SnapshotError("snapshot.checksum must be a string")
    try:
        expected = checksum(doc)
    except (TypeError, ValueError) as exc:
        raise SnapshotError(f"snapshot is not canonical JSON data: {exc}") from None
    if doc["checksum"] != expected:
        raise SnapshotError("snapshot checksum mismatch: the document was modified or damaged")
    if not isinstance(doc["keys"], list):
        raise SnapshotError("snapshot.keys must be a list")
    if len(doc["keys"]) > MAX_KEYS:
        raise SnapshotError(f"snapshot.keys has {len(doc['keys'])} entries, at most {MAX_KEYS} are accepted")
    seen: set[str] = set()
    for i, e in enumerate(doc["keys"]):
        _validate_entry(i, e, now, max_cooldown_s)
        if e["id"] in seen:
            raise SnapshotError(f"keys[{i}].id {e['id']} appears twice")
        seen.add(e["id"])
    return doc["keys"]
