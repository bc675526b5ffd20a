"""Capability pre-checks before dispatch (pure): does a target's catalog entry take this request?

Token estimate (cheap, conservative): the prompt as the tpm reservation sizes it
(``proxy.clients.limits.estimate_prompt``: ceil(characters / 4) of the text, plus 4 per message and 256
per image / audio / file part) plus the request's ``max_completion_tokens`` / ``max_tokens`` (0 when it
names none). Characters / 4 rather over- than under-counts English and code only slightly and never counts
base64 media; the check skips a target only when the estimate exceeds its context window, so a prompt
near the edge may still reach the upstream, which then answers its own 400.

A target is skipped when its entry says it cannot take the request: context window smaller than the
estimate, an input modality the request uses (``image_url`` → image, ``input_audio`` → audio, ``file`` →
file / pdf) missing from its input modalities, or ``tools`` when the request has tools. A target without
an entry, or an unknown field, is never skipped.
"""
from __future__ import annotations

from dataclasses import dataclass

from proxy.catalog.parse import Entry

PART_MODALITIES = {"image_url": "image", "input_image": "image", "image": "image", "input_audio": "audio",
                   "audio": "audio", "file": "file", "input_file": "file"}
FILE_ALIASES = {"file", "pdf"}  # OpenRouter says file, models.dev says pdf


@dataclass(frozen=True)
class Needs:
    tokens: int
    prompt_tokens: int
    modalities: frozenset[str]
    tools: bool


@dataclass(frozen=True)
class Skip:
    target: str  # provider/model
    reason: str  # context | modality | tools
    detail: str


def needs(req: dict) -> Needs:
    from proxy.clients.limits import estimate_prompt  # limits imports metrics, which imports the relay

    prompt = estimate_prompt(req)
    reserve = 0
    for name in ("max_completion_tokens", "max_tokens"):
        value = req.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            reserve = value
            break
    modalities = set()
    for msg in req.get("messages") or ():
        content = msg.get("content") if isinstance(msg, dict) else None
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in PART_MODALITIES:
                    modalities.add(PART_MODALITIES[kind])
    return Needs(prompt + reserve, prompt, frozenset(modalities), bool(req.get("tools")))


def problem(entry: Entry | None, need: Needs, target: str) -> Skip | None:
    """Why ``entry`` cannot take the request (None: it can, or nothing is known)."""
    if entry is None:
        return None
    if entry.context and need.tokens > entry.context:
        return Skip(target, "context", f"context window {entry.context} < ~{need.tokens} tokens "
                                       f"(prompt ~{need.prompt_tokens} + max_tokens)")
    if entry.input_modalities:
        have = set(entry.input_modalities)
        if have & FILE_ALIASES:
            have |= FILE_ALIASES
        missing = sorted(need.modalities - have)
        if missing:
            return Skip(target, "modality", f"no {', '.join(missing)} input (takes "
                                            f"{', '.join(entry.input_modalities)})")
    if need.tools and entry.tools is False:
        return Skip(target, "tools", "no tool support")
    return None
