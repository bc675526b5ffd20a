"""Optional OpenTelemetry tracing (``tracing.enabled``; packages: ``pip install 'keyrelay[otel]'``).

One trace per client request, continuing the client's ``traceparent`` when it sent one:

    POST /v1/chat/completions      SERVER    keyrelay.client_id, keyrelay.model, http.response.status_code
    ├── attempt 1                  INTERNAL  keyrelay.provider / .upstream_model / .key_id / .retry, outcome
    │   └── POST gemini            CLIENT    the upstream call; its context travels upstream as traceparent
    └── attempt 2 ...

Attributes carry key ids, never secrets. Spans are exported in batches by a background thread (a
greenlet under gevent) started with the worker's background work; with tracing off nothing here runs
and the request path only tests ``trace.spans is None``.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.config import TargetConfig, TracingConfig

log = logging.getLogger("keyrelay")


class Tracing:
    """A tracer and the W3C propagator, around an SDK ``TracerProvider`` (given, or built from config)."""

    def __init__(self, provider: Any) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.tracer = provider.get_tracer("keyrelay")
        self.propagator = TraceContextTextMapPropagator()

    @classmethod
    def from_config(cls, cfg: TracingConfig) -> Tracing | None:
        """None when tracing is off, or on without its packages (said once in the log)."""
        if not cfg.enabled:
            return None
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
            from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        except ImportError:
            log.warning("tracing.enabled is set but OpenTelemetry is not installed "
                        "(pip install 'keyrelay[otel]'): no spans", extra={"event": "tracing_unavailable"})
            return None
        from proxy import __version__

        provider = TracerProvider(
            resource=Resource.create({"service.name": "keyrelay", "service.version": __version__}),
            sampler=ParentBased(TraceIdRatioBased(cfg.sample)))
        if cfg.exporter == "console":
            exporter: Any = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            endpoint = cfg.endpoint
            if endpoint and endpoint.rstrip("/").count("/") <= 2:  # a collector's base URL
                endpoint = endpoint.rstrip("/") + "/v1/traces"
            exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    def start_request(self, method: str, route: str, headers: Any) -> RequestSpans:
        from opentelemetry.trace import SpanKind

        parent = self.propagator.extract(carrier={"traceparent": headers.get("traceparent", ""),
                                                  "tracestate": headers.get("tracestate", "")})
        span = self.tracer.start_span(f"{method} {route}", context=parent, kind=SpanKind.SERVER,
                                      attributes={"http.request.method": method, "http.route": route})
        return RequestSpans(self, span)

    def close(self) -> None:
        self.provider.shutdown()  # exports what is batched


class RequestSpans:
    """The spans of one client request; the relay opens one ``AttemptSpans`` per upstream attempt."""

    def __init__(self, tracing: Tracing, span: Any) -> None:
        self.tracing, self.span = tracing, span

    def attempt(self, target: TargetConfig, key_id: str, retry: int) -> AttemptSpans:
        from opentelemetry.trace import SpanKind, set_span_in_context

        tracer = self.tracing.tracer
        attempt = tracer.start_span(f"attempt {retry + 1}", context=set_span_in_context(self.span),
                                    attributes={"keyrelay.provider": target.provider,
                                                "keyrelay.upstream_model": target.model,
                                                "keyrelay.key_id": key_id, "keyrelay.retry": retry})
        call = tracer.start_span(f"POST {target.provider}", context=set_span_in_context(attempt),
                                 kind=SpanKind.CLIENT, attributes={"keyrelay.provider": target.provider})
        headers: dict[str, str] = {}
        self.tracing.propagator.inject(headers, context=set_span_in_context(call))
        return AttemptSpans(attempt, call, headers)

    def end(self, status: int, client_id: str | None, model: str | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("http.response.status_code", status)
        if client_id:
            self.span.set_attribute("keyrelay.client_id", client_id)
        if model:
            self.span.set_attribute("keyrelay.model", model)
        if status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        self.span.end()


class AttemptSpans:
    def __init__(self, attempt: Any, call: Any, headers: dict[str, str]) -> None:
        self.attempt, self.call = attempt, call
        self.headers = headers  # traceparent (and tracestate) of the upstream call, sent upstream

    def end(self, outcome: str, status: int | None) -> None:
        from opentelemetry.trace import Status, StatusCode

        end = time.time_ns()
        if status is not None:
            self.call.set_attribute("http.response.status_code", status)
        self.attempt.set_attribute("keyrelay.outcome", outcome)
        if outcome not in ("ok", "client"):
            self.attempt.set_status(Status(StatusCode.ERROR, outcome))
            self.call.set_status(Status(StatusCode.ERROR, outcome))
        self.call.end(end_time=end)
        self.attempt.end(end_time=end)
