"""Scriptable local mock of the Gemini, OpenAI-compatible, Anthropic and Ollama APIs (see server.py).

    from tests.mock_upstream import MockUpstream, error, delay, hold, reset_after
    with MockUpstream() as mock:
        mock.script(key="k1", behaviour=error(429, retry_delay="2s"), times=1)

Exports are resolved lazily so that ``python -m tests.mock_upstream.server`` can monkey-patch gevent
before anything imports sockets or threads.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MockUpstream": "server", "ANY": "server",
    "Behaviour": "script", "error": "script", "invalid_key": "script", "delay": "script", "pace": "script",
    "hold": "script", "reset_after": "script", "hang": "script", "reply": "script", "replay": "script",
    "require_thought_signature": "script",
    "gemini_error": "errors", "gemini_api_key_invalid": "errors", "openai_error": "errors",
    "anthropic_error": "errors", "ollama_error": "errors", "OPENAI_INSUFFICIENT_QUOTA": "errors",
    "thought_signature": "core", "embedding": "core", "FIXTURES": "core",
    "RemoteMock": "client", "MockProcess": "client",
    "QuotaLimiter": "quota", "gemini_quota_error": "quota",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
