"""What a runtime upstream key may look like, and how an import text is split (pure functions).

Shape checks only (whether a key works is what ``POST /admin/api/keys/{id}/test`` finds out): a key is
printable ASCII with no whitespace or control character inside, 16 to 256 characters long (Gemini keys
are 39, OpenAI project keys ~164, Anthropic ~108; base_url lets a provider type front other services, so
no prefix is required). The reason never quotes the key.
"""
from __future__ import annotations

MIN_LEN, MAX_LEN = 16, 256
HINT_MIN_LEN = 12  # shorter secrets get no hint at all: 7 of 11 characters would say too much


def hint(secret: str | None) -> str | None:
    """``AIza…x9Q``: first 4 + "…" + last 3 characters; just "…" for short secrets; None if keyless."""
    if not secret:
        return None
    if len(secret) < HINT_MIN_LEN:
        return "…"
    return f"{secret[:4]}…{secret[-3:]}"


def malformed(secret: str) -> str | None:
    """Why ``secret`` (already stripped) cannot be an upstream key, or None."""
    if any(c.isspace() for c in secret):
        return "whitespace inside the key"
    if any(not (c.isascii() and c.isprintable()) for c in secret):
        return "control or non-ASCII character in the key"
    if len(secret) < MIN_LEN:
        return f"too short ({len(secret)} characters; at least {MIN_LEN})"
    if len(secret) > MAX_LEN:
        return f"too long ({len(secret)} characters; at most {MAX_LEN})"
    return None


def split_import(text: str) -> list[tuple[int, str]]:
    """(line number, candidate key) for each newline- or comma-separated item; blank items and lines
    starting with ``#`` are skipped. Spaces and tabs around an item are trimmed (not inside it)."""
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith("#"):
            continue
        for item in line.split(","):
            item = item.strip(" \t\r")
            if item:
                out.append((n, item))
    return out
