"""The merged catalog as one worker sees it (plain data, pure functions): which entry a configured
target is, the free models of a provider, and the OpenRouter-style fields ``/v1/models`` shows."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from proxy import model_names
from proxy.catalog.parse import OPENROUTER, Entry, merge_all
from proxy.config import FreePoolConfig, PriceConfig, ProviderConfig, TargetConfig

# configured provider type -> models.dev provider id (an openai-type provider on openrouter.ai is OpenRouter)
TYPE_PROVIDERS = {"gemini": "google", "anthropic": "anthropic", "openai": "openai"}


@dataclass(frozen=True)
class View:
    entries: dict[tuple[str, str], Entry] = field(default_factory=dict)
    version: int = -1

    @classmethod
    def of(cls, entries: Iterable[Entry], version: int) -> View:
        return cls(merge_all(list(entries)), version)

    def entry(self, provider: ProviderConfig | None, model: str) -> Entry | None:
        ref = catalog_provider(provider)
        return self.entries.get((ref, model)) if ref else None

    def search(self, provider: str | None = None, free: bool | None = None, q: str | None = None,
               limit: int = 500) -> list[Entry]:
        """Entries of a catalog provider, free or not, whose id contains ``q`` (case-insensitive)."""
        needle = (q or "").lower()
        out = []
        for (prov, model), e in sorted(self.entries.items()):
            if provider and prov != provider:
                continue
            if free is not None and e.free != free:
                continue
            if needle and needle not in model.lower() and needle not in (e.name or "").lower():
                continue
            out.append(e)
            if len(out) >= limit:
                break
        return out


def catalog_provider(provider: ProviderConfig | None) -> str | None:
    """The catalog provider id a configured provider's models are listed under, or None."""
    if provider is None:
        return None
    if provider.catalog:
        return OPENROUTER if provider.catalog == OPENROUTER else provider.catalog.split(":", 1)[1]
    host = (urlsplit(provider.base_url).hostname or "").lower()
    if provider.type == "openai" and (host == "openrouter.ai" or host.endswith(".openrouter.ai")):
        return OPENROUTER
    return TYPE_PROVIDERS.get(provider.type)


def free_models(view: View, provider: ProviderConfig | None, pool: FreePoolConfig) -> list[TargetConfig]:
    """The pool's targets: free entries of the provider's catalog that take at least ``min_context``
    tokens and every modality in ``input``; widest context first, then newest; at most ``max_models``.
    A non-zero (or unknown) price never qualifies, nor an id outside the model-name grammar."""
    ref = catalog_provider(provider)
    if ref is None or provider is None:
        return []
    wanted = set(pool.input)
    found = [e for (prov, _), e in view.entries.items()
             if prov == ref and is_free(e) and (e.context or 0) >= pool.min_context
             and (not e.input_modalities or wanted <= set(e.input_modalities))
             and model_names.problem(e.model) is None]
    found.sort(key=lambda e: (-(e.context or 0), -(e.created or 0), e.model))
    return [TargetConfig(provider.name, e.model) for e in found[: pool.max_models]]


def is_free(e: Entry) -> bool:
    return e.free and e.price_input == 0 and e.price_output == 0


def price(e: Entry | None) -> PriceConfig | None:
    """The usage price of an entry: both input and output prices must be known."""
    if e is None or e.price_input is None or e.price_output is None:
        return None
    return PriceConfig(e.price_input, e.price_output, e.price_cached_input)


def model_fields(e: Entry) -> dict:
    """What ``/v1/models`` adds, as OpenRouter names it: pricing in USD per token, as strings."""
    out: dict = {}
    if e.context:
        out["context_length"] = e.context
    if e.price_input is not None and e.price_output is not None:
        out["pricing"] = {"prompt": _per_token(e.price_input), "completion": _per_token(e.price_output)}
    if e.input_modalities:
        out["architecture"] = {"input_modalities": list(e.input_modalities)}
    return out


def _per_token(per_million: float) -> str:
    return f"{per_million / 1_000_000:.12f}".rstrip("0").rstrip(".") or "0"
