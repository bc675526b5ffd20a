"""The ``inspector:`` and ``logging:`` config sections, parsed by ``proxy.config`` (errors name paths)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from proxy.transforms import compile_path

if TYPE_CHECKING:
    from proxy.config import _Obj


@dataclass(frozen=True)
class InspectorConfig:
    enabled: bool = False
    sample: float = 1.0  # share of matching requests captured (decided by the request id: deterministic)
    max_entries: int = 1000  # transactions kept in the ring (all workers together)
    max_bytes: int = 67108864  # stored bytes kept in the ring
    max_body_bytes: int = 262144  # per body (a stream: all its chunks together); longer ones are cut
    models: tuple[str, ...] = ()  # globs over the model the client asked for; empty: every model
    clients: tuple[str, ...] = ()  # client ids; empty: every client
    redact: tuple[str, ...] = ()  # JSONPaths whose values are stored as "[REDACTED]"
    redact_paths: tuple[Any, ...] = ()  # the same, compiled


@dataclass(frozen=True)
class LoggingConfig:
    bodies: bool = False  # the request log line also carries the (redacted, capped) bodies


def _strings(o: _Obj, key: str) -> tuple[str, ...]:
    from proxy.config import ConfigError

    value = o.get(key, []) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{o.at(key)}: expected a list of strings")
    return tuple(v.strip() for v in value)


def parse_inspector(o: _Obj) -> InspectorConfig:
    d = InspectorConfig()
    redact = _strings(o, "redact")
    cfg = InspectorConfig(
        enabled=o.bool("enabled", d.enabled),
        sample=float(o.num("sample", d.sample, minimum=0, maximum=1)),
        max_entries=o.num("max_entries", d.max_entries, minimum=1, integer=True),
        max_bytes=o.num("max_bytes", d.max_bytes, minimum=1024, integer=True),
        max_body_bytes=o.num("max_body_bytes", d.max_body_bytes, minimum=0, integer=True),
        models=_strings(o, "models"),
        clients=_strings(o, "clients"),
        redact=redact,
        redact_paths=tuple(compile_path(p, f"{o.at('redact')}[{i}]") for i, p in enumerate(redact)),
    )
    o.done()
    return cfg


def parse_logging(o: _Obj) -> LoggingConfig:
    cfg = LoggingConfig(bodies=o.bool("bodies", False))
    o.done()
    return cfg
