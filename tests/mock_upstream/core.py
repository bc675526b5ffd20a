"""Dialect-neutral reply logic: what the mock answers, derived deterministically from the request.

Each dialect module parses its request into a ``Prompt`` and renders a ``Reply``; the decisions (echo text,
tool calls, JSON mode, image description, token counts, embedding vectors) live here once.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
CREATED = 1727346168  # fixed timestamp: responses are byte-for-byte reproducible
DEFAULT_CHUNKS = 3
EMBED_DIMS = 8


@dataclass
class Tool:
    name: str
    parameters: dict = field(default_factory=dict)  # JSON schema of the arguments


@dataclass
class Image:
    mime_type: str
    size: int  # decoded bytes


@dataclass
class Prompt:
    """The parts of a chat request that decide the answer."""

    model: str
    last_text: str = ""  # text of the last user turn
    tool_result: tuple[str, str] | None = None  # (function name, result as text) when the last turn is one
    images: list[Image] = field(default_factory=list)  # images in the last user turn
    tools: list[Tool] = field(default_factory=list)  # empty when tools are absent or disabled
    json_mode: bool = False
    thinking: bool = False  # a thinking budget was requested: report thought tokens
    include_thoughts: bool = False  # ...and emit a thought part (Gemini)
    prompt_tokens: int = 1


@dataclass
class ToolCall:
    name: str
    args: dict
    id: str  # deterministic, for dialects that carry call ids

    @property
    def arguments(self) -> str:
        return json.dumps(self.args)


@dataclass
class Reply:
    text: str
    tool_calls: list[ToolCall]
    thought: str = ""
    prompt_tokens: int = 1
    completion_tokens: int = 1
    thoughts_tokens: int = 0


def count_tokens(text: str) -> int:
    """A plausible, deterministic token count (~words)."""
    return max(1, len(re.findall(r"\w+|[^\w\s]", text)))


def digest(*parts: object) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def thought_signature(model: str, name: str, args: dict) -> str:
    """The signature the mock attaches to a Gemini functionCall part (base64, like real ones)."""
    raw = hashlib.sha256(f"sig|{model}|{name}|{json.dumps(args, sort_keys=True)}".encode()).digest()
    return base64.b64encode(raw * 2).decode()


def embedding(text: str, dims: int = EMBED_DIMS) -> list[float]:
    """A deterministic vector in [-1, 1] derived from the text."""
    out: list[float] = []
    counter = 0
    while len(out) < dims:
        block = hashlib.sha256(f"{counter}|{text}".encode()).digest()
        out.extend(round(b / 127.5 - 1.0, 6) for b in block)
        counter += 1
    return out[:dims]


def sniff_mime(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data.startswith(b"GIF8"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def image_from_b64(data: str, mime_type: str | None = None) -> Image:
    try:
        raw = base64.b64decode(data, validate=False)
    except ValueError:
        raw = b""
    return Image(mime_type or sniff_mime(raw), len(raw))


def image_from_data_url(url: str) -> Image | None:
    m = re.match(r"data:([^;,]+);base64,(.*)", url, re.S)
    return image_from_b64(m.group(2), m.group(1)) if m else None


def _arg_value(schema: dict, word: str, n_words: int) -> object:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "string")).lower()
    if kind == "integer":
        return n_words
    if kind == "number":
        return float(n_words)
    if kind == "boolean":
        return True
    if kind == "array":
        return [word]
    if kind == "object":
        return {}
    return word


def tool_args(tool: Tool, prompt_text: str) -> dict:
    """Arguments for a call: every declared property, filled from the prompt's last word."""
    words = re.findall(r"\w+", prompt_text)
    word = words[-1] if words else "x"
    props = (tool.parameters or {}).get("properties") or {}
    return {name: _arg_value(schema or {}, word, len(words)) for name, schema in props.items()}


def plan_reply(p: Prompt, text_override: str | None = None) -> Reply:
    """Decide the answer: tool call(s), a tool-result acknowledgement, JSON, or an echo."""
    calls: list[ToolCall] = []
    if p.tool_result is not None:
        name, result = p.tool_result
        text = f"echo: function {name} returned {result}"
    elif p.tools and p.last_text:
        chosen = p.tools if "parallel" in p.last_text.lower() else p.tools[:1]
        for i, tool in enumerate(chosen):
            args = tool_args(tool, p.last_text)
            calls.append(ToolCall(tool.name, args, digest(p.model, p.last_text, tool.name, i)[:24]))
        text = ""
    else:
        text = f"echo: {p.last_text}"
        for img in p.images:
            text += f" [image {img.mime_type} {img.size} bytes]"
        if p.json_mode:
            text = json.dumps({"echo": p.last_text, "images": [i.mime_type for i in p.images]})
    if text_override is not None:
        text = text_override
    thought = f"Thinking about: {p.last_text}" if p.include_thoughts else ""
    completion = (count_tokens(text) if text else 0) + sum(count_tokens(c.arguments) for c in calls)
    return Reply(
        text=text,
        tool_calls=calls,
        thought=thought,
        prompt_tokens=p.prompt_tokens,
        completion_tokens=max(1, completion),
        thoughts_tokens=(count_tokens(thought) + 5) if p.thinking else 0,
    )


def split_text(text: str, n: int) -> list[str]:
    """Split into exactly n non-empty pieces: at word starts when there are enough words, else by
    characters (padding with '.' when the text is shorter than n)."""
    n = max(1, n)
    words = re.findall(r"\s*\S+\s*$|\s*\S+", text)
    if len(words) >= n and "".join(words) == text:
        size, extra = divmod(len(words), n)
        groups, pos = [], 0
        for i in range(n):
            step = size + (1 if i < extra else 0)
            groups.append("".join(words[pos : pos + step]))
            pos += step
        return groups
    if len(text) < n:
        text += "." * (n - len(text))
    size, extra = divmod(len(text), n)
    pieces, pos = [], 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        pieces.append(text[pos : pos + step])
        pos += step
    return pieces


def split_json(s: str, n: int = 3) -> list[str]:
    """Argument fragments for streamed tool calls (may be fewer than n for short strings)."""
    return [piece for piece in split_text(s, min(n, max(1, len(s)))) if piece]


def load_fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def load_fixture_json(name: str) -> dict:
    return json.loads(load_fixture(name))
