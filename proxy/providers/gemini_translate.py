"""OpenAI Chat Completions <-> Gemini generateContent translation (pure functions, no I/O).

The one place where the two dialects meet: request bodies, responses, stream events, errors,
embeddings and model names (one URL path segment each). Facts and sources: docs/upstream-api-notes.md
sections 1, 2 and 7.

thoughtSignature round trip (stateless): Gemini puts an opaque ``thoughtSignature`` on functionCall
parts and (Gemini 3) insists on getting it back with the next request. OpenAI clients only keep the
tool call id, so the signature travels inside the id we synthesize::

    call_<12 hex>_ts_<urlsafe base64 of the signature, no padding>

The id uses only [A-Za-z0-9_-] (valid for OpenAI and Anthropic clients alike). Any worker can decode it
from the assistant message's ``tool_calls[].id``; ids without the marker simply carry no signature.

Images: ``data:`` URLs become ``inlineData``. Gemini cannot fetch arbitrary web URLs, so an
``http(s)`` image URL is accepted only when it is a Gemini Files API URI, a ``gs://`` URI or a YouTube
link (sent as ``fileData``); any other URL is a BadRequest that tells the client to send a data URL.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
import re
import secrets
import time
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from proxy.errors import CLIENT, BadRequest, UpstreamError
from proxy.json_depth import loads_embedded
from proxy.keys import learn
from proxy.providers import toolkit as tk
from proxy.providers.http import parse_retry_after

PREFIX = "gemini: "

# ---------------------------------------------------------------------------------------------------
# tool call ids carrying a thoughtSignature

_SIG_MARK = "_ts_"
_ID_RE = re.compile(r"^call_[0-9a-f]{12}_ts_([A-Za-z0-9_-]+)$")


def make_tool_call_id(signature: str | None = None) -> str:
    """A fresh OpenAI tool call id; with a signature, the signature is encoded into it."""
    base = "call_" + secrets.token_hex(6)
    if not signature:
        return base
    enc = base64.urlsafe_b64encode(signature.encode("utf-8")).decode("ascii").rstrip("=")
    return base + _SIG_MARK + enc


def signature_from_tool_call_id(call_id: str | None) -> str | None:
    """The thoughtSignature encoded by make_tool_call_id, or None."""
    if not call_id:
        return None
    m = _ID_RE.match(call_id)
    if not m:
        return None
    enc = m.group(1)
    try:
        return base64.urlsafe_b64decode(enc + "=" * (-len(enc) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------
# request: OpenAI chat -> Gemini generateContent

_SCHEMA_KEYS = {
    "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
    "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
    "propertyOrdering", "default", "items", "minimum", "maximum",
}  # fmt: skip


def sanitize_schema(schema: Any) -> Any:
    """Reduce a JSON Schema to the OpenAPI subset Gemini's ``Schema`` accepts.

    Drops keys such as ``$schema``, ``additionalProperties``, ``strict``, ``$defs``; turns
    ``type: [X, "null"]`` into ``type: X, nullable: true`` and ``const`` into a one-value ``enum``.
    """
    if isinstance(schema, list):
        return [sanitize_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "const" and "enum" not in schema:
            out["enum"] = [value]
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if types:
                out["type"] = types[0]
            if len(types) != len(value):
                out["nullable"] = True
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: sanitize_schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = sanitize_schema(value)
        elif key in _SCHEMA_KEYS:
            out[key] = value
    return out


def _parse_data_url(url: str) -> dict:
    head, sep, data = url.partition(",")
    if not sep or ";base64" not in head:
        raise BadRequest("image data URLs must be base64-encoded (data:<mime>;base64,...)", param="messages")
    mime = head[5:].split(";", 1)[0] or "application/octet-stream"
    return {"inlineData": {"mimeType": mime, "data": data}}


def _file_uri_part(url: str) -> dict:
    fetchable = (
        url.startswith("gs://")
        or url.startswith("https://generativelanguage.googleapis.com/")
        or re.match(r"^https?://(www\.)?(youtube\.com|youtu\.be)/", url) is not None
    )
    if not fetchable:
        raise BadRequest(
            "the gemini upstream cannot fetch image URLs; send the image inline as a data: URL",
            param="messages",
        )
    mime = mimetypes.guess_type(url.split("?", 1)[0])[0]
    if mime is None:
        mime = "video/*" if "youtu" in url else "application/octet-stream"
    return {"fileData": {"fileUri": url, "mimeType": mime}}


def _content_parts(content: Any) -> list[dict]:
    """OpenAI message content (str or list of parts) -> Gemini parts."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise BadRequest("message content must be a string or a list of parts", param="messages")
    parts: list[dict] = []
    for item in content:
        if isinstance(item, str):
            parts.append({"text": item})
            continue
        kind = item.get("type")
        if kind in ("text", "input_text"):
            if item.get("text"):
                parts.append({"text": item["text"]})
        elif kind == "image_url":
            ref = item.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            if not isinstance(url, str) or not url:
                raise BadRequest("image_url part without a url", param="messages")
            parts.append(_parse_data_url(url) if url.startswith("data:") else _file_uri_part(url))
        elif kind == "input_audio":
            audio = item.get("input_audio") or {}
            fmt = audio.get("format", "wav")
            parts.append({"inlineData": {"mimeType": f"audio/{fmt}", "data": audio.get("data", "")}})
        elif kind == "file":
            data = (item.get("file") or {}).get("file_data")
            if not isinstance(data, str) or not data.startswith("data:"):
                raise BadRequest("file parts need file_data as a base64 data: URL", param="messages")
            parts.append(_parse_data_url(data))
        elif kind == "refusal":
            if item.get("refusal"):
                parts.append({"text": item["refusal"]})
        else:
            raise BadRequest(f"unsupported content part type for gemini: {kind!r}", param="messages")
    return parts


def _function_response(content: Any) -> dict:
    try:
        text = tk.text_of(content)
    except ValueError:
        text = str(content)
    try:
        value = loads_embedded(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"result": text}


def _tool_call_parts(tool_calls: list) -> list[dict]:
    parts = []
    for tc in tool_calls:
        fn = tc.get("function") or {}
        name = fn.get("name")
        if not name:
            raise BadRequest("assistant tool_calls[].function.name is required", param="messages")
        try:
            args = tk.tool_arguments(tc)
        except ValueError:
            raise BadRequest(
                f"tool call {name!r} has arguments that are not valid JSON", param="messages"
            ) from None
        call = {"name": name, "args": args if isinstance(args, dict) else {}}
        part: dict[str, Any] = {"functionCall": call}
        sig = signature_from_tool_call_id(tc.get("id"))
        if sig:
            part["thoughtSignature"] = sig
        parts.append(part)
    return parts


def _contents(messages: list) -> tuple[list[dict], list[dict]]:
    """(systemInstruction parts, contents) with consecutive same-role turns merged."""
    system: list[dict] = []
    contents: list[dict] = []
    names: dict[str, str] = {}  # tool_call_id -> function name

    def add(role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": list(parts)})

    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise BadRequest(f"messages[{i}] must be an object", param="messages")
        role = msg.get("role")
        if role in ("system", "developer"):
            system.extend({"text": p["text"]} for p in _content_parts(msg.get("content")) if "text" in p)
        elif role == "user":
            add("user", _content_parts(msg.get("content")))
        elif role == "assistant":
            parts = _content_parts(msg.get("content"))
            tool_calls = msg.get("tool_calls") or []
            for tc in tool_calls:
                if tc.get("id") and (tc.get("function") or {}).get("name"):
                    names[tc["id"]] = tc["function"]["name"]
            add("model", parts + _tool_call_parts(tool_calls))
        elif role == "tool":
            name = names.get(msg.get("tool_call_id") or "") or msg.get("name")
            if not name:
                raise BadRequest(
                    f"messages[{i}]: tool_call_id {msg.get('tool_call_id')!r} matches no earlier tool call",
                    param="messages",
                )
            response = _function_response(msg.get("content"))
            add("user", [{"functionResponse": {"name": name, "response": response}}])
        else:
            raise BadRequest(f"messages[{i}]: unsupported role {role!r}", param="messages")
    return system, contents


_BUDGETS = {"none": 0, "minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
_LEVELS = {"none": "low", "minimal": "low", "low": "low", "medium": "high", "high": "high"}


def _thinking_config(effort: str, model: str | None) -> dict:
    """reasoning_effort -> thinkingConfig: Gemini 3 takes thinkingLevel, 2.5 a token budget.

    Budgets follow Google's own OpenAI-compat mapping (low/medium/high = 1K/8K/24K, none = 0).
    """
    if effort not in _BUDGETS:
        raise BadRequest(f"unsupported reasoning_effort {effort!r}", param="reasoning_effort")
    if model and "gemini-3" in model:
        return {"thinkingLevel": _LEVELS[effort]}
    return {"thinkingBudget": _BUDGETS[effort]}


def _generation_config(req: Mapping[str, Any], model: str | None) -> dict:
    cfg: dict[str, Any] = {}
    simple = {
        "temperature": "temperature",
        "top_p": "topP",
        "n": "candidateCount",
        "seed": "seed",
        "presence_penalty": "presencePenalty",
        "frequency_penalty": "frequencyPenalty",
    }
    for src, dst in simple.items():
        if req.get(src) is not None:
            cfg[dst] = req[src]
    max_tokens = req.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = req.get("max_tokens")
    if max_tokens is not None:
        cfg["maxOutputTokens"] = max_tokens
    stop = req.get("stop")
    if isinstance(stop, str):
        cfg["stopSequences"] = [stop]
    elif isinstance(stop, list) and stop:
        cfg["stopSequences"] = list(stop)
    fmt = req.get("response_format") or {}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "json_object":
        cfg["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        cfg["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            cfg["responseSchema"] = sanitize_schema(schema)
    elif kind not in (None, "text"):
        raise BadRequest(f"unsupported response_format type {kind!r}", param="response_format")
    if req.get("reasoning_effort"):
        cfg["thinkingConfig"] = _thinking_config(req["reasoning_effort"], model)
    return cfg


def _tools(tools: list) -> list[dict]:
    decls = []
    for tool in tools:
        if tool.get("type", "function") != "function":
            raise BadRequest(f"unsupported tool type for gemini: {tool.get('type')!r}", param="tools")
        fn = tool.get("function") or {}
        if not fn.get("name"):
            raise BadRequest("tools[].function.name is required", param="tools")
        decl: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            decl["description"] = fn["description"]
        params = sanitize_schema(fn.get("parameters") or {})
        # Gemini rejects an OBJECT schema with no properties: a function without parameters omits it.
        if params and (params.get("type") != "object" or params.get("properties")):
            decl["parameters"] = params
        decls.append(decl)
    return [{"functionDeclarations": decls}] if decls else []


def _tool_config(choice: Any) -> dict | None:
    if choice is None:
        return None
    if isinstance(choice, str):
        mode = {"none": "NONE", "auto": "AUTO", "required": "ANY"}.get(choice)
        if mode is None:
            raise BadRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")
        return {"functionCallingConfig": {"mode": mode}}
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not name:
        raise BadRequest("tool_choice object needs function.name", param="tool_choice")
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def to_gemini_request(req: Mapping[str, Any], model: str | None = None) -> dict:
    """OpenAI chat request -> Gemini generateContent body.

    ``model`` (the upstream model id) only matters for reasoning_effort (thinkingLevel vs budget).
    Raises BadRequest for shapes Gemini cannot express.
    """
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages must be a non-empty list", param="messages")
    system, contents = _contents(messages)
    if not contents:
        raise BadRequest("gemini needs at least one user or assistant message", param="messages")
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    cfg = _generation_config(req, model)
    if cfg:
        body["generationConfig"] = cfg
    tools = _tools(req.get("tools") or [])
    if tools:
        body["tools"] = tools
    tool_config = _tool_config(req.get("tool_choice"))
    if tool_config:
        body["toolConfig"] = tool_config
    return body


# ---------------------------------------------------------------------------------------------------
# response: Gemini -> OpenAI chat.completion

_FILTERED = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "LANGUAGE"}


def map_finish_reason(reason: str | None, has_tool_calls: bool) -> str:
    if reason == "MAX_TOKENS":
        return "length"
    if reason in _FILTERED:
        return "content_filter"
    return "tool_calls" if has_tool_calls else "stop"


def usage_from_metadata(meta: Mapping[str, Any] | None) -> dict:
    """Gemini usageMetadata -> OpenAI usage (thinking tokens count as completion tokens)."""
    meta = meta or {}
    prompt = int(meta.get("promptTokenCount") or 0)
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + thoughts
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(meta.get("totalTokenCount") or prompt + completion),
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    }
    if meta.get("cachedContentTokenCount"):
        usage["prompt_tokens_details"] = {"cached_tokens": int(meta["cachedContentTokenCount"])}
    return usage


def _tool_call(part: Mapping[str, Any]) -> dict:
    fc = part["functionCall"]
    return {
        "id": make_tool_call_id(part.get("thoughtSignature")),
        "type": "function",
        "function": {"name": fc.get("name", ""), "arguments": json.dumps(fc.get("args") or {})},
    }


def _answer_parts(candidate: Mapping[str, Any]) -> Iterable[dict]:
    """The parts that belong in the answer: no thoughts, no signature-only empty texts."""
    for part in (candidate.get("content") or {}).get("parts") or []:
        if part.get("thought"):
            continue
        if "functionCall" in part or part.get("text"):
            yield part


def from_gemini_response(body: Mapping[str, Any], model: str) -> dict:
    """Gemini generateContent response -> OpenAI chat.completion (``model`` = client-facing name)."""
    choices = []
    for pos, cand in enumerate(body.get("candidates") or []):
        texts: list[str] = []
        calls: list[dict] = []
        for part in _answer_parts(cand):
            if "functionCall" in part:
                calls.append(_tool_call(part))
            else:
                texts.append(part["text"])
        content = "".join(texts) if texts or not calls else None
        reason = map_finish_reason(cand.get("finishReason"), bool(calls))
        choices.append(
            tk.completion_choice(cand.get("index", pos), tk.assistant_message(content, calls), reason)
        )
    if not choices:  # prompt blocked (promptFeedback.blockReason) or an empty answer
        reason = "content_filter" if body.get("promptFeedback") else "stop"
        choices.append(tk.completion_choice(0, tk.assistant_message(""), reason))
    usage = usage_from_metadata(body.get("usageMetadata"))
    return tk.completion(tk.completion_id(), int(time.time()), model, choices, usage)


# ---------------------------------------------------------------------------------------------------
# streaming: Gemini SSE events -> OpenAI chat.completion.chunk


class StreamTranslator(tk.StreamChunks):
    """Turns parsed Gemini stream events into OpenAI chunk dicts, one event at a time.

    ``feed(event)`` returns the chunks for one event; ``finish()`` returns the closing chunks (finish
    chunks for choices Gemini never finished) and ``usage_chunk()`` the ``choices: []`` usage chunk.
    Gemini sends function-call args whole, so each call becomes one tool_call delta.
    """

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.events = 0
        self._usage: Mapping[str, Any] | None = None
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._calls: dict[int, int] = {}  # choice index -> tool calls emitted

    def _start(self, index: int, out: list[dict]) -> None:
        if index not in self._started:
            self._started.add(index)
            out.append(self.make_chunk({"role": "assistant", "content": ""}, index=index))

    def _finish(self, index: int, reason: str, out: list[dict]) -> None:
        if index not in self._finished:
            self._finished.add(index)
            out.append(self.make_chunk({}, reason, index))

    def feed(self, event: Mapping[str, Any]) -> list[dict]:
        self.events += 1
        if event.get("usageMetadata"):
            self._usage = event["usageMetadata"]
        out: list[dict] = []
        candidates = event.get("candidates") or []
        if not candidates and event.get("promptFeedback", {}).get("blockReason"):
            self._start(0, out)
            self._finish(0, "content_filter", out)
            return out
        for pos, cand in enumerate(candidates):
            index = cand.get("index", pos)
            self._start(index, out)
            for part in _answer_parts(cand):
                if "functionCall" in part:
                    n = self._calls.get(index, 0)
                    self._calls[index] = n + 1
                    call = _tool_call(part)
                    out.append(self.make_chunk({"tool_calls": [{"index": n, **call}]}, index=index))
                else:
                    out.append(self.make_chunk({"content": part["text"]}, index=index))
            if cand.get("finishReason"):
                reason = map_finish_reason(cand["finishReason"], self._calls.get(index, 0) > 0)
                self._finish(index, reason, out)
        return out

    def finish(self) -> list[dict]:
        """Close every choice Gemini left open (a stream that ended without finishReason)."""
        out: list[dict] = []
        for index in sorted(self._started - self._finished):
            self._finish(index, "tool_calls" if self._calls.get(index) else "stop", out)
        return out

    def usage(self) -> dict:
        return usage_from_metadata(self._usage)

    def usage_chunk(self) -> dict:
        return self.make_usage_chunk(self.usage())


# ---------------------------------------------------------------------------------------------------
# errors: google.rpc.Status envelope -> UpstreamError

_RETRY_IN = re.compile(r"retry in ([0-9]+(?:\.[0-9]+)?)\s*(ms|s)\b", re.IGNORECASE)


def _duration(value: Any) -> float | None:
    """A protobuf Duration string ("34.4s", "20.523512914s") in seconds."""
    if not isinstance(value, str) or not value.endswith("s"):
        return None
    try:
        return max(0.0, float(value[:-1]))
    except ValueError:
        return None


def parse_error_envelope(body: bytes | str | Mapping | list | None) -> dict:
    """The ``error`` object of a google.rpc.Status body (also inside a JSON array), or {}."""
    obj = tk.json_body(body)
    if isinstance(obj, list):
        obj = obj[0] if obj else {}
    err = obj.get("error") if isinstance(obj, dict) else None
    return err if isinstance(err, dict) else {}


def classify_error(
    status: int,
    body: bytes | str | Mapping | list | None,
    headers: Mapping[str, Any] | None = None,
    *,
    secret: str | None = None,
) -> UpstreamError:
    """Decide the outcome of a Gemini error answer and what the client should see."""
    err = parse_error_envelope(body)
    details = [d for d in err.get("details") or [] if isinstance(d, dict)]
    rpc_status = err.get("status") or ""
    reasons = {d.get("reason") for d in details if d.get("@type", "").endswith("google.rpc.ErrorInfo")}
    message = str(err.get("message") or f"upstream answered HTTP {status}")
    if secret:
        message = message.replace(secret, "***")
    message = PREFIX + message[:1000]

    if "API_KEY_INVALID" in reasons or status == 401 or rpc_status == "UNAUTHENTICATED":
        return tk.status_error(401, message, upstream_status=status, code="invalid_api_key")
    if status == 403 or rpc_status == "PERMISSION_DENIED":
        return tk.status_error(403, message, upstream_status=status, code="permission_denied")
    if status == 429 or rpc_status == "RESOURCE_EXHAUSTED":
        retry = None
        daily = False
        for d in details:
            kind = d.get("@type", "")
            if kind.endswith("google.rpc.RetryInfo") and retry is None:
                retry = _duration(d.get("retryDelay"))
            elif kind.endswith("google.rpc.QuotaFailure"):
                daily |= any("PerDay" in str(v.get("quotaId", "")) for v in d.get("violations") or [])
            elif kind.endswith("google.rpc.ErrorInfo"):  # old style: metadata.quota_limit
                daily |= any("PerDay" in str(v) for v in (d.get("metadata") or {}).values())
        if retry is None:
            retry = parse_retry_after(tk.header(headers, "retry-after"))
        if retry is None:
            m = _RETRY_IN.search(message)
            if m:
                retry = float(m.group(1)) / (1000.0 if m.group(2).lower() == "ms" else 1.0)
        code = "insufficient_quota" if daily else "rate_limit_exceeded"
        exc = tk.status_error(
            429, message, upstream_status=status, retry_after=retry, daily=daily, code=code
        )
        exc.limits = learn.from_gemini_error(err)
        return exc
    client_code = None
    if 400 <= status < 500 and status != 408:
        client_code = "model_not_found" if status == 404 else "invalid_request"
    return tk.status_error(status, message, code=client_code)


# ---------------------------------------------------------------------------------------------------
# embeddings and models


_MODELS = "models/"
_FORBIDDEN_IN_MODEL = set("/:?#%")


def model_id(model: str) -> str:
    """The model id as exactly one URL path segment's worth of text: ``models/`` stripped once, then
    anything that could leave ``models/<id>:<method>`` refused (``/``, ``.``/``..``, ``:`` — the method
    follows it —, ``?``, ``#``, ``%``, whitespace, control characters) with a CLIENT 400, before any I/O.
    The model name comes from the client: it must never choose another upstream path. Names that passed
    are remembered (a bounded set: the per-character check cost ~10 us per request)."""
    name = _VALID_IDS.get(model)
    if name is not None:
        return name
    name = _check_model_id(model)
    if len(_VALID_IDS) < _MAX_VALID_IDS:
        _VALID_IDS[model] = name
    return name


_VALID_IDS: dict[str, str] = {}
_MAX_VALID_IDS = 4096


def _check_model_id(model: str) -> str:
    name = model[len(_MODELS) :] if model.startswith(_MODELS) else model
    bad = name in ("", ".", "..") or any(
        c in _FORBIDDEN_IN_MODEL or c.isspace() or unicodedata.category(c).startswith("C") for c in name
    )
    if bad:
        shown = "".join(c if c.isprintable() else "?" for c in model[:100])
        raise UpstreamError(
            f"{PREFIX}model name {shown!r} is not a valid Gemini model id "
            "(one path segment: no '/', ':', '?', '#', '%', whitespace or control characters)",
            outcome=CLIENT,
            status=400,
            code="invalid_model",
        )
    return name


def model_resource(model: str) -> str:
    """ "gemini-2.5-flash" or "models/gemini-2.5-flash" -> "models/gemini-2.5-flash" (for request bodies)."""
    return _MODELS + model_id(model)


def model_path(model: str) -> str:
    """The model's resource name for a URL path: ``models/`` + the id as one percent-encoded segment."""
    path = _PATHS.get(model)
    if path is None:
        path = _MODELS + quote(model_id(model), safe="")
        if len(_PATHS) < _MAX_VALID_IDS:
            _PATHS[model] = path
    return path


_PATHS: dict[str, str] = {}


def to_gemini_embed(req: Mapping[str, Any], model: str) -> tuple[str, dict]:
    """OpenAI embeddings request -> (method suffix, body) for embedContent / batchEmbedContents."""
    inp = req.get("input")
    extra: dict[str, Any] = {}
    if req.get("dimensions") is not None:
        extra["outputDimensionality"] = req["dimensions"]
    if isinstance(inp, str):
        return ":embedContent", {"content": {"parts": [{"text": inp}]}, **extra}
    if isinstance(inp, list) and inp and all(isinstance(s, str) for s in inp):
        resource = model_resource(model)
        reqs = [{"model": resource, "content": {"parts": [{"text": s}]}, **extra} for s in inp]
        return ":batchEmbedContents", {"requests": reqs}
    if isinstance(inp, list) and inp:
        raise BadRequest("gemini embeddings accept text input only, not token arrays", param="input")
    raise BadRequest("input must be a string or a non-empty list of strings", param="input")


def from_gemini_embed(body: Mapping[str, Any], model: str, encoding_format: str | None = "float") -> dict:
    """embedContent / batchEmbedContents response -> OpenAI embeddings list envelope."""
    if "embeddings" in body:
        vectors = [e.get("values") or [] for e in body.get("embeddings") or []]
    else:
        vectors = [(body.get("embedding") or {}).get("values") or []]
    fmt = encoding_format or "float"
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": tk.encode_floats(v, fmt)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": 0, "total_tokens": 0},  # Gemini does not report embedding tokens
    }
