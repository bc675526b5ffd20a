"""The request path, top to bottom: resolve the model, plan the attempts, and for each attempt take a key
from the pool, call the provider adapter, classify and record the outcome, then answer or move on.

Policy (``config.retry``, see ``_run``): a quota or transient failure moves to the next key, then to the
next target (fallback order, or a weighted first pick), at once; a pause (backoff with full jitter, or a
short cooldown) comes only when no target has a fresh key. ``attempts`` and ``deadline_s`` bound every
request; each upstream call also has its provider's connect / first-byte / idle timeouts, and the
request deadline bounds every phase of it (a stream's until its first line).

Failover happens only before the first byte reaches the client: for a stream, that means until the
adapter produced its first chunk. After that, a failure ends the stream with an error event (the
blueprint renders it) and the key is scored. A client that goes away closes the stream, which closes
the upstream connection.
"""
from __future__ import annotations

import glob
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from proxy import model_names
from proxy.catalog.service import Catalog, free_pool_targets
from proxy.clients.model import Usage, merge_usage
from proxy.config import Config, ModelConfig, ProviderConfig, RetryConfig, TargetConfig
from proxy.errors import (
    CLIENT,
    OK,
    TRANSIENT,
    BadRequest,
    GatewayError,
    ModelNotFound,
    NoKeyAvailable,
    UpstreamError,
)
from proxy.keys.specs import Key
from proxy.providers import http, make_adapter
from proxy.providers.base import Adapter, Call, Timeouts

log = logging.getLogger("keyrelay")


@dataclass
class Attempt:
    provider: str
    model: str
    key_id: str
    outcome: str
    latency_ms: float
    error: str | None = None
    status: int | None = None  # the upstream's HTTP status, when it answered


@dataclass
class Trace:
    """What happened while serving one request; read by logging and metrics."""

    attempts: list[Attempt] = field(default_factory=list)
    route: TargetConfig | None = None
    key_id: str | None = None
    first_byte_ms: float | None = None
    usage: Usage | None = None  # tokens, as the upstream reported them (merged over a stream's events)
    streamed_chars: int = 0  # text relayed to the client so far (sizes a stream cut short)
    spans: Any = None  # observability.tracing.RequestSpans when tracing is on
    attempt_spans: Any = None  # the open attempt's AttemptSpans (ended by _record)
    skipped: list[dict] = field(default_factory=list)  # targets the catalog pre-check skipped, and why
    limits: list = field(default_factory=list)  # quota limits the answering upstream revealed
    cached: bool = False  # answered from the response cache (proxy/cache): no upstream call, $0
    hook: Any = None  # proxy.inspect.capture.Exchange: transforms and capture of this request, or None

    @property
    def route_name(self) -> str | None:
        return f"{self.route.provider}/{self.route.model}" if self.route else None


class KeySource(Protocol):
    """What the relay needs from the key manager (``proxy.keys.KeyPool`` in production)."""

    def acquire(self, provider: str, model: str, exclude: frozenset[str] = ...) -> Key:
        """A usable key for (provider, model) not in ``exclude``; raises NoKeyAvailable at once."""
        ...

    def record(self, key_id: str, model: str, outcome: str, *, latency_ms: float | None = None,
               retry_after: float | None = None, daily: bool = False, error: str | None = None,
               status: int | None = None, tokens: int = 0, limits: Sequence[Any] = ()) -> None:
        """Account one upstream attempt made with ``key_id`` (``tokens`` it used, quota ``limits`` the
        answer revealed; ``status``, the upstream's HTTP status, for the key's history)."""
        ...


class Observer:
    """Hooks the relay calls as it works (metrics implement them; the default does nothing)."""

    def attempt(self, attempt: Attempt) -> None:
        """One upstream attempt finished (outcome, latency)."""

    def first_byte(self, target: TargetConfig, seconds: float) -> None:
        """The upstream's answer (or first stream chunk) arrived after ``seconds``."""

    def retry(self, kind: str, target: TargetConfig) -> None:
        """Another attempt follows a failure: ``kind`` is "key" (next key, same target) or "target"."""

    def usage(self, target: TargetConfig, usage: dict) -> None:
        """Token usage reported by the upstream (OpenAI ``usage`` shape)."""


_EMPTY = object()  # a stream that ended before its first item


class DeadlineExceeded(GatewayError):
    status = 504
    code = "deadline_exceeded"


class Relay:
    def __init__(self, config: Config, pool: KeySource, observer: Observer | None = None,
                 catalog: Catalog | None = None) -> None:
        self.config = config
        self.pool = pool
        self.observer = observer or Observer()
        self.catalog = catalog  # prices, context windows, modalities, free models (proxy.catalog)
        self.adapters: dict[str, tuple[ProviderConfig, Adapter]] = {
            p.name: (p, make_adapter(p)) for p in config.providers
        }
        self.passthrough = passthrough_patterns(config)

    # ------------------------------------------------------------------------------------ public API

    def complete(self, req: dict, trace: Trace, op: Callable[[Adapter, Call, dict], Any]) -> Any:
        """One whole answer from the first target and key that can give it."""
        result = self._run(req, trace, op)
        return trace.hook.answer(result) if trace.hook is not None else result

    def stream(
        self, req: dict, trace: Trace, op: Callable[[Adapter, Call, dict], Iterator[Any]]
    ) -> Iterator[Any]:
        """Open a stream with failover until its first item; the returned iterator yields every item."""
        holder: dict = {}

        def open_stream(adapter: Adapter, call: Call, r: dict) -> Any:
            gen = op(adapter, call, r)
            holder["gen"] = gen
            try:
                return next(gen)
            except StopIteration:
                return _EMPTY
            except BaseException:
                _close(gen)
                raise

        first = self._run(req, trace, open_stream, record_ok=False)
        target, key_id = trace.route, trace.key_id
        assert target is not None and key_id is not None  # _run returns only after an attempt answered
        return self._relay_stream(first, holder["gen"], trace, target, key_id)

    def chat(self, req: dict, trace: Trace) -> dict:
        return self.complete(req, trace, lambda adapter, call, r: adapter.chat(call, r))

    def chat_stream(self, req: dict, trace: Trace) -> Iterator[dict]:
        return self.stream(req, trace, lambda adapter, call, r: adapter.chat_stream(call, r))

    def embeddings(self, req: dict, trace: Trace) -> dict:
        return self.complete(req, trace, lambda adapter, call, r: adapter.embeddings(call, r))

    def resolve(self, name: str) -> list[TargetConfig]:
        """Targets for a client model name: a configured alias, or ``provider/model`` pass-through
        where that provider's ``passthrough`` allows the model. ``name`` passed ``check_model``."""
        model = self.config.model(name)
        if model and model.free_pool:
            return free_pool_targets(self.catalog, name, model.free_pool)
        if model:
            return self._order(model)
        provider, sep, upstream_model = name.partition("/")
        if sep and model_names.matches(upstream_model, self.passthrough.get(provider, ())):
            return [TargetConfig(provider, upstream_model)]
        raise ModelNotFound(
            f"The model '{name}' does not exist. Use GET /v1/models to list the models this gateway serves.",
            param="model",
        )

    def models(self) -> list[dict]:
        """What clients may ask for: configured names, then ``provider/model`` for advertised models."""
        ids = [m.name for m in self.config.models]
        for p in self.config.providers:
            ids += [f"{p.name}/{m}" for m in p.models]
        return [{"id": i, "object": "model", "created": 0, "owned_by": "keyrelay"}
                for i in dict.fromkeys(ids)]

    # ------------------------------------------------------------------------------------ attempts

    def _order(self, model: ModelConfig) -> list[TargetConfig]:
        targets = list(model.targets)
        if model.strategy == "weighted" and len(targets) > 1:
            first = random.choices(targets, weights=[max(t.weight, 0.0) or 1e-9 for t in targets])[0]
            targets.remove(first)
            targets.insert(0, first)
        return targets

    def _run(self, req: dict, trace: Trace, op: Callable[[Adapter, Call, dict], Any], *,
             record_ok: bool = True) -> Any:
        """Rounds over the targets in order. Within a round each target offers its keys not yet tried,
        with no pause: a quota or transient failure moves to the next key, then to the next target, at
        once. Only when every target is out of fresh keys does the relay pause (exponential backoff with
        full jitter after transient failures, or the soonest cooldown when every key only cools down and
        that wait is within ``retry_after_cap_s``) and go round again. The attempt budget and the
        request deadline bound it all."""
        retry = self.config.retry
        deadline = time.monotonic() + retry.deadline_s
        targets = self.resolve(req["model"])
        if self.catalog is not None:  # skip targets that cannot take the request (400 when none can)
            targets = self.catalog.precheck(req, targets, trace)
        attempts = 0
        failed: tuple[TargetConfig, UpstreamError] | None = None  # the latest failed attempt
        no_key: list[NoKeyAvailable] = []  # targets with no usable key left in the latest round
        transient = False  # the latest round saw a transient failure (a key that may work again)
        for round_no in range(retry.attempts):
            if round_no:
                pause = _pause(retry, round_no, transient, no_key)
                if pause is None or attempts >= retry.attempts or time.monotonic() + pause >= deadline:
                    break
                time.sleep(pause)
            no_key, transient = [], False
            for target in targets:
                provider, adapter = self.adapters[target.provider]
                tried: set[str] = set()
                while attempts < retry.attempts:
                    if time.monotonic() >= deadline:
                        raise _deadline(retry.deadline_s, failed)
                    try:
                        key = self.pool.acquire(target.provider, target.model, frozenset(tried))
                    except NoKeyAvailable as exc:
                        no_key.append(exc)
                        break
                    if failed:
                        self.observer.retry("key" if failed[0] == target else "target", target)
                    if trace.spans is not None:
                        trace.attempt_spans = trace.spans.attempt(target, key.id, attempts)
                    attempts += 1
                    call = self._call(provider, target, key, deadline, trace)
                    started = time.monotonic()
                    try:
                        result = op(adapter, call, {**req, "model": target.model})
                    except UpstreamError as exc:
                        self._record(trace, target, key.id, exc.outcome, _ms_since(started), exc)
                        if exc.outcome == CLIENT or exc.outcome not in retry.retry_on:
                            raise
                        failed, transient = (target, exc), transient or exc.outcome == TRANSIENT
                        tried.add(key.id)
                        continue
                    latency = _ms_since(started)
                    trace.route, trace.key_id, trace.first_byte_ms = target, key.id, latency
                    trace.limits = call.learned
                    self.observer.first_byte(target, latency / 1000)
                    if record_ok:
                        self._usage(trace, target, result)
                        self._record(trace, target, key.id, OK, latency)
                    return result
        if failed and (attempts >= retry.attempts or not no_key):
            raise failed[1]
        raise _merge_no_key(no_key)

    def _call(self, provider: ProviderConfig, target: TargetConfig, key: Key, deadline: float,
              trace: Trace | None = None) -> Call:
        t = provider.timeouts
        headers = provider.headers
        transport = http.transport_for(provider)
        if trace is not None and trace.attempt_spans is not None:  # the trace continues upstream
            headers = {**headers, **trace.attempt_spans.headers}
        if trace is not None and trace.hook is not None:  # the inspector's tap, the transforms
            transport = trace.hook.attempt(target, key.id, transport)
        return Call(
            base_url=provider.base_url,
            model=target.model,
            key=key.secret,
            timeouts=Timeouts(t.connect, t.first_byte, t.idle, deadline),  # the transport clips to deadline
            headers=headers,
            transport=transport,
        )

    def _usage(self, trace: Trace, target: TargetConfig, item: Any) -> None:
        usage = _find_usage(item)
        if usage:
            trace.usage = merge_usage(trace.usage, usage)
            self.observer.usage(target, usage)

    def _account(self, trace: Trace, target: TargetConfig, item: Any) -> None:
        """One stream item's text and usage, counted on the trace (the plain OpenAI chunk, the common
        case, without the general walk of tagged items)."""
        if type(item) is dict and "choices" in item:
            for choice in item["choices"]:
                delta = choice.get("delta")
                text = delta.get("content") if delta else None
                if text:
                    trace.streamed_chars += len(text)
            usage = item.get("usage")
            if usage:
                trace.usage = merge_usage(trace.usage, usage)
                self.observer.usage(target, usage)
            return
        self._usage(trace, target, item)
        trace.streamed_chars += _text_len(item)

    def _record(self, trace: Trace, target: TargetConfig, key_id: str, outcome: str, latency_ms: float,
                exc: UpstreamError | None = None) -> None:
        self.pool.record(
            key_id, target.model, outcome, latency_ms=latency_ms,
            retry_after=exc.retry_after if exc else None, daily=exc.daily if exc else False,
            error=exc.message if exc else None,
            tokens=trace.usage.total if outcome == OK and trace.usage else 0,
            limits=exc.limits if exc else trace.limits, status=exc.upstream_status if exc else 200,
        )
        error = exc.message if exc else None
        status = exc.upstream_status if exc else 200
        attempt = Attempt(target.provider, target.model, key_id, outcome, latency_ms, error, status)
        trace.attempts.append(attempt)
        if trace.attempt_spans is not None:
            trace.attempt_spans.end(outcome, status)
            trace.attempt_spans = None
        self.observer.attempt(attempt)

    # ------------------------------------------------------------------------------------ streaming

    def _relay_stream(self, first: Any, gen: Iterator[Any], trace: Trace, target: TargetConfig,
                      key_id: str) -> Iterator[Any]:
        started = time.monotonic()
        outcome, error = OK, None
        hook = trace.hook  # response transforms, capture
        try:
            if first is not _EMPTY:
                self._account(trace, target, first)
                yield hook.chunk(first) if hook is not None else first
            if hook is None:
                for item in gen:
                    self._account(trace, target, item)
                    yield item
            else:
                for item in gen:
                    self._account(trace, target, item)
                    yield hook.chunk(item)
        except UpstreamError as exc:
            outcome, error = TRANSIENT if exc.outcome == OK else exc.outcome, exc
            raise
        except Exception as exc:  # an adapter bug must still end the client's stream with an error event
            log.exception("stream from %s failed", trace.route_name)
            outcome = TRANSIENT
            error = UpstreamError(f"upstream stream failed: {type(exc).__name__}", outcome=TRANSIENT)
            raise error from None
        except GeneratorExit:
            outcome = CLIENT  # the client went away: not the key's fault
            raise
        finally:
            _close(gen)
            latency = (trace.first_byte_ms or 0) + (time.monotonic() - started) * 1000
            self._record(trace, target, key_id, outcome, latency, error)


def check_model(name: object) -> str:
    """A client's model name, checked against the grammar before anything uses it (400 otherwise)."""
    why = model_names.problem(name)
    if why:
        raise BadRequest(f"Invalid 'model': {why}.", param="model", code="invalid_model")
    return name  # type: ignore[return-value]  # problem() is None only for a str


def passthrough_patterns(config: Config) -> dict[str, tuple[str, ...]]:
    """Per provider, the globs a ``provider/<model>`` name must match: ``any`` is everything; ``listed``
    (the default) the provider's ``models`` and the models that targets name for it (exact)."""
    out: dict[str, tuple[str, ...]] = {}
    for p in config.providers:
        if p.passthrough == "any":
            out[p.name] = ("*",)
        elif p.passthrough == "listed":
            named = [t.model for m in config.models for t in m.targets if t.provider == p.name]
            out[p.name] = tuple(glob.escape(m) for m in dict.fromkeys([*p.models, *named]))
        else:
            out[p.name] = tuple(p.passthrough)
    return out


def _text_len(item: Any) -> int:
    """Characters of text in a stream item: an OpenAI chunk's deltas, or a native Anthropic
    ``content_block_delta`` (tagged items are tuples whose last element is the item)."""
    while isinstance(item, tuple) and item:
        item = item[-1]
    if not isinstance(item, dict):
        return 0
    if "choices" in item:
        return sum(len((c.get("delta") or {}).get("content") or "") for c in item["choices"])
    delta = item.get("delta")
    if item.get("type") == "content_block_delta" and isinstance(delta, dict):
        return len(delta.get("text") or "")
    return 0


def _find_usage(item: Any) -> dict | None:
    """Token usage in a response, a chunk, or a tagged/evented stream item (the last element of a tuple)."""
    while isinstance(item, tuple) and item:
        item = item[-1]
    if not isinstance(item, dict):
        return None
    message = item.get("message")
    if "usage" not in item and isinstance(message, dict) and item.get("type") == "message_start":
        # Anthropic's message_start carries the input tokens in message.usage (its output_tokens is a
        # placeholder; message_delta reports the output): without it a native stream counted no input
        usage = message.get("usage")
        return {k: v for k, v in usage.items() if k != "output_tokens"} if isinstance(usage, dict) else None
    return item.get("usage")


def _close(items: Iterator[Any]) -> None:
    """Close a stream's iterator at once (a generator's ``finally`` closes the upstream response)."""
    closer = getattr(items, "close", None)
    if closer is not None:
        closer()


def _pause(retry: RetryConfig, round_no: int, transient: bool, no_key: list[NoKeyAvailable]) -> float | None:
    """How long to wait before round ``round_no`` (1, 2, ...), or None when waiting cannot help."""
    if transient:  # exponential backoff with full jitter
        return random.uniform(0, min(retry.backoff_cap_s, retry.backoff_base_s * 2 ** (round_no - 1)))
    soonest = min((e.retry_after for e in no_key if e.retry_after is not None), default=math.inf)
    # a key cools down, or a circuit reopens, that soon
    return soonest if soonest <= retry.retry_after_cap_s else None


def _deadline(seconds: float, failed: tuple[TargetConfig, UpstreamError] | None) -> DeadlineExceeded:
    last = f" (last error: {failed[1].message})" if failed else ""
    return DeadlineExceeded(f"no upstream answered within the request deadline of {seconds:g}s{last}")


def _ms_since(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _merge_no_key(errors: list[NoKeyAvailable]) -> NoKeyAvailable:
    """One answer for 'no key for any target': cooling with the soonest return when some target's key
    comes back by itself, else 503; the diagnosis (and the per-key capacity) covers every target."""
    if len(errors) == 1:
        return errors[0]
    diagnosis = [d for e in errors for d in e.diagnosis]
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    if waits:
        soonest = min(waits)
        merged = NoKeyAvailable("every upstream key for every target of this model is rate-limited or "
                                f"recovering; retry in {max(1, math.ceil(soonest))}s",
                                retry_after=soonest, diagnosis=diagnosis)
        keys = [k for e in errors if isinstance(e.details, dict) for k in e.details.get("keys", [])]
        if keys:
            merged.details = {"keys": keys}
        return merged
    return NoKeyAvailable("no upstream key can serve any target of this model right now",
                          diagnosis=diagnosis)
