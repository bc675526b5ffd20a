"""The grammar every model name must match, wherever it comes from (a client, the config).

A model name ends up in upstream URL paths (Gemini puts it there), in response headers
(``X-Keyrelay-Route``), in logs and metrics labels, so it is checked once, strictly, before anything
uses it: letters, digits, ``.`` ``-`` ``_`` ``:`` in segments joined by single ``/`` (provider ids such
as OpenRouter's ``meta-llama/llama-3.3-70b:free`` have them), no ``..``, at most 256 characters.
Names that match are plain ASCII, so they are safe in a header by construction.
"""
from __future__ import annotations

import fnmatch
import re

MAX_LEN = 256
_GRAMMAR = re.compile(r"[A-Za-z0-9._:-]+(?:/[A-Za-z0-9._:-]+)*")


def problem(name: object) -> str | None:
    """Why ``name`` is not a valid model name, or None when it is (the reason never echoes it)."""
    if not isinstance(name, str) or not name:
        return "expected a non-empty model name string"
    if len(name) > MAX_LEN:
        return f"a model name has at most {MAX_LEN} characters"
    if not _GRAMMAR.fullmatch(name):
        return "a model name has letters, digits, '.', '-', '_', ':' and single '/' separators only"
    if ".." in name:
        return "a model name must not contain '..'"
    return None


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """Does ``name`` match one of the glob ``patterns`` (``*``, ``?``, ``[...]``; case-sensitive)?"""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)
