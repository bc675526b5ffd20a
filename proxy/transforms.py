"""Transforms: which client headers go upstream, and JSONPath / regex edits of the upstream body and of the
client's answer, per provider and per model (``providers[].transforms``, ``models[].transforms``).

Compiled once at config load (``parse_transforms``: every JSONPath parsed, every regex compiled, each error
naming its path, e.g. ``providers[0].transforms.request[1].regex``); applied by plain functions on plain
data (``upstream_headers``, ``apply_rules``). JSONPath is jsonpath-ng's extended grammar (a well-kept, pure
Python implementation of Goessner's JSONPath that can also *update* and *delete* what a path matches).

Header modes (``headers.mode``, only when a ``headers`` section is configured; without one no client header
goes upstream, as before):

- ``passthrough``: every client header; ``whitelist``: only ``allow``; ``blacklist``: all but ``deny``;
- never forwarded whatever the mode: credentials (``CREDENTIALS``) and what the transport owns (``OWNED``:
  hop-by-hop, framing, Host, Content-Type, Accept-Encoding);
- then the adapter's own headers (its credential, config ``headers``, dialect headers) win over the
  client's, ``add`` sets a header when absent, ``force`` always sets it, ``drop`` removes it (also the
  transport's default ``user-agent``). ``add`` / ``force`` / ``drop`` may not name a credential.

Body rules, in order (``request``: the upstream body in the upstream's dialect, after translation;
``response``: the client's answer, each stream chunk's JSON included):

- ``{set: PATH, value: V}``: set (creating missing objects on the way);
- ``{add: PATH, value: V}``: set only where the path matches nothing yet;
- ``{drop: PATH}``: remove what matches;
- ``{regex: RE, replace: S, path: PATH}``: ``re.sub`` on each matched string (``path`` absent: every
  string in the document).

A rule that fails at run time (a value of the wrong type...) is logged with the request id and skipped:
the value goes through untransformed, never a broken body.
"""
from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext import parse as parse_jsonpath

if TYPE_CHECKING:
    from proxy.config import _Obj

log = logging.getLogger("keyrelay")

HEADER_MODES = ("passthrough", "whitelist", "blacklist")
CREDENTIALS = frozenset({"authorization", "proxy-authorization", "x-api-key", "x-goog-api-key", "api-key",
                         "cookie", "set-cookie"})
OWNED = frozenset({"host", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                   "trailer", "upgrade", "content-length", "content-type", "accept-encoding", "expect"})
OPS = ("set", "add", "drop", "regex")


@dataclass(frozen=True)
class HeaderRules:
    mode: str = "passthrough"
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    force: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    drop: frozenset[str] = frozenset()


@dataclass(frozen=True)
class BodyRule:
    op: str  # set | add | drop | regex
    path: Any  # a compiled jsonpath-ng expression (None: a regex over every string)
    where: str  # the config path of this rule, for run-time error logs
    value: Any = None
    pattern: re.Pattern | None = None
    replace: str = ""


@dataclass(frozen=True)
class Transforms:
    """One scope's transforms; a section left out is None (the provider's applies, or nothing)."""

    headers: HeaderRules | None = None
    request: tuple[BodyRule, ...] | None = None
    response: tuple[BodyRule, ...] | None = None

    @property
    def empty(self) -> bool:
        return self.headers is None and not self.request and not self.response


NONE = Transforms()


def merge(provider: Transforms | None, model: Transforms | None) -> Transforms:
    """The transforms of one target: per section, the model's settings win over the provider's."""
    p, m = provider or NONE, model or NONE
    return Transforms(
        headers=m.headers if m.headers is not None else p.headers,
        request=m.request if m.request is not None else p.request,
        response=m.response if m.response is not None else p.response,
    )


# ---------------------------------------------------------------------------------------------- config


def compile_path(text: Any, where: str) -> Any:
    """A compiled JSONPath, or ConfigError naming ``where``."""
    from proxy.config import ConfigError

    if not isinstance(text, str) or not text.strip().startswith("$"):
        raise ConfigError(f"{where}: expected a JSONPath starting with '$'")
    try:
        return parse_jsonpath(text.strip())
    except (JSONPathError, Exception) as exc:  # ply raises plain Exceptions for some inputs
        raise ConfigError(f"{where}: invalid JSONPath: {exc}") from None


def compile_regex(text: Any, where: str) -> re.Pattern:
    from proxy.config import ConfigError

    if not isinstance(text, str) or not text:
        raise ConfigError(f"{where}: expected a regular expression")
    try:
        return re.compile(text)
    except re.error as exc:
        raise ConfigError(f"{where}: invalid regular expression: {exc}") from None


def _names(o: _Obj, key: str) -> frozenset[str]:
    from proxy.config import ConfigError

    value = o.get(key, []) or []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{o.at(key)}: expected a list of header names")
    return frozenset(v.strip().lower() for v in value)


def _header_map(o: _Obj, key: str) -> tuple[tuple[str, str], ...]:
    from proxy.config import ConfigError

    value = o.get(key, {}) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.strip() for k in value):
        raise ConfigError(f"{o.at(key)}: expected a mapping of header name to value")
    out = []
    for name, v in value.items():
        if isinstance(v, bool) or not isinstance(v, (str, int, float)):
            raise ConfigError(f"{o.at(key)}.{name}: expected a string")
        text = str(v)
        if "\r" in text or "\n" in text or "\r" in name or "\n" in name:
            raise ConfigError(f"{o.at(key)}.{name}: a header may not contain a line break")
        out.append((name.strip().lower(), text))
    return tuple(out)


def _headers(o: _Obj) -> HeaderRules:
    from proxy.config import ConfigError

    rules = HeaderRules(
        mode=o.str("mode", "passthrough", choices=HEADER_MODES), allow=_names(o, "allow"),
        deny=_names(o, "deny"), force=_header_map(o, "force"), add=_header_map(o, "add"),
        drop=_names(o, "drop"),
    )
    for key, names in (("force", [n for n, _ in rules.force]), ("add", [n for n, _ in rules.add]),
                       ("drop", rules.drop)):
        bad = sorted(set(names) & (CREDENTIALS | OWNED))
        if bad:
            raise ConfigError(f"{o.at(key)}: {bad[0]!r} is set by keyrelay itself and cannot be configured")
    o.done()
    return rules


def _rule(raw: Any, where: str) -> BodyRule:
    from proxy.config import ConfigError, _Obj

    o = _Obj(raw, where)
    ops = [op for op in OPS if op in o.data]
    if len(ops) != 1:
        raise ConfigError(f"{where}: expected exactly one of {', '.join(OPS)}")
    op = ops[0]
    if op == "regex":
        pattern = compile_regex(o.get("regex"), o.at("regex"))
        replace = o.get("replace", "")
        if not isinstance(replace, str):
            raise ConfigError(f"{o.at('replace')}: expected a string")
        path = compile_path(o.get("path"), o.at("path")) if o.get("path") is not None else None
        rule = BodyRule(op, path, where, pattern=pattern, replace=replace)
    else:
        path = compile_path(o.get(op), o.at(op))
        if op != "drop" and "value" not in o.data:
            raise ConfigError(f"{o.at('value')}: required")
        rule = BodyRule(op, path, where, value=o.get("value"))
    o.done()
    return rule


def _rules(o: _Obj, key: str) -> tuple[BodyRule, ...] | None:
    if o.get(key) is None:
        return None
    return tuple(_rule(raw, where) for raw, where in o.list(key, []))


def parse_transforms(o: _Obj) -> Transforms | None:
    """``transforms`` of a provider or a model (None when absent)."""
    if not o.data:
        return None
    headers = None if o.get("headers") is None else _headers(o.sub("headers", {}))
    out = Transforms(headers, _rules(o, "request"), _rules(o, "response"))
    o.done()
    return out


# ---------------------------------------------------------------------------------------------- headers


def upstream_headers(rules: HeaderRules, adapter: Mapping[str, str],
                     client: Iterable[tuple[str, str]]) -> tuple[dict[str, str], frozenset[str]]:
    """The headers to send upstream and the transport defaults to leave out (``drop``)."""
    out: dict[str, str] = {}
    for name, value in client:
        low = name.lower()
        if low in CREDENTIALS or low in OWNED:
            continue
        if rules.mode == "whitelist" and low not in rules.allow:
            continue
        if rules.mode == "blacklist" and low in rules.deny:
            continue
        out[low] = value
    for name, value in adapter.items():
        out[name.lower()] = value
    for name, value in rules.add:
        out.setdefault(name, value)
    for name, value in rules.force:
        out[name] = value
    for name in rules.drop:
        out.pop(name, None)
    return out, rules.drop


# ---------------------------------------------------------------------------------------------- bodies


def apply_rules(rules: Iterable[BodyRule], doc: Any, request_id: str | None = None) -> Any:
    """``doc`` with every rule applied in order, on a copy (the caller's value is never changed)."""
    out = doc
    for rule in rules:
        try:
            out = _apply(rule, copy.deepcopy(out))  # on a copy: a rule that fails leaves nothing half done
        except Exception as exc:  # never a broken body: this rule is skipped
            log.warning("transform %s failed: %s", rule.where, type(exc).__name__,
                        extra={"event": "transform_error", "request_id": request_id, "rule": rule.where})
    return out


def _apply(rule: BodyRule, doc: Any) -> Any:
    if rule.op == "set":
        return rule.path.update_or_create(doc, copy.deepcopy(rule.value))
    if rule.op == "add":
        if rule.path.find(doc):
            return doc
        return rule.path.update_or_create(doc, copy.deepcopy(rule.value))
    if rule.op == "drop":
        return rule.path.filter(lambda _v: True, doc)
    assert rule.pattern is not None
    pattern, replace = rule.pattern, rule.replace

    def sub(value: Any, *_: Any) -> Any:
        return pattern.sub(replace, value) if isinstance(value, str) else value

    if rule.path is None:
        return _map_strings(doc, sub)
    return rule.path.update(doc, sub)


def _map_strings(doc: Any, fn: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _map_strings(v, fn) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_map_strings(v, fn) for v in doc]
    return fn(doc)
