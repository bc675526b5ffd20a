"""Upstream adapters by provider type."""
from __future__ import annotations

from proxy.config import ProviderConfig
from proxy.providers.base import Adapter


def make_adapter(provider: ProviderConfig) -> Adapter:
    """The adapter for a configured provider (imported lazily: each dialect is its own module)."""
    if provider.type == "mock":
        from proxy.providers.mock import MockAdapter

        return MockAdapter(provider.latency_ms, provider.chunk_delay_ms)
    if provider.type == "gemini":
        from proxy.providers.gemini import GeminiAdapter

        return GeminiAdapter()
    if provider.type == "openai":
        from proxy.providers.openai import OpenAIAdapter

        return OpenAIAdapter(name=provider.name)
    if provider.type == "anthropic":
        from proxy.providers.anthropic import AnthropicAdapter

        return AnthropicAdapter()
    if provider.type == "ollama":
        from proxy.providers.ollama import OllamaAdapter

        return OllamaAdapter()
    raise ValueError(f"unknown provider type {provider.type!r}")
