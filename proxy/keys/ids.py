"""Stable key ids: a short fingerprint of provider + secret, so a key is never named by its secret."""
from __future__ import annotations

import hashlib
import re

ID_PATTERN = re.compile(r"^k_[0-9a-f]{10}$")


def key_id(provider: str, secret: str | None) -> str:
    """``k_`` + 10 hex of sha256(provider NUL secret); keyless providers (secret None) hash the name only."""
    material = f"keyless\0{provider}" if secret is None else f"{provider}\0{secret}"
    return "k_" + hashlib.sha256(material.encode("utf-8")).hexdigest()[:10]


def scrub(text: str | None, secret: str | None, limit: int = 300) -> str | None:
    """Remove the secret from an error text (defence in depth) and cap its length."""
    if text is None:
        return None
    if secret:
        text = text.replace(secret, "***")
    return text if len(text) <= limit else text[: limit - 1] + "…"
