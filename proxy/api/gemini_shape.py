"""Gemini's own API ⇄ the internal OpenAI shape, for the Gemini-native endpoint (pure functions, no I/O).

``proxy/providers/gemini_translate.py`` turns OpenAI requests into Gemini ones for the Gemini upstream;
this module does the reverse direction for Gemini clients whose model is served by another upstream:

* ``validate_*``: a Gemini body's fields, type-checked once (400 naming the field).
* ``to_chat_request``: ``generateContent`` → chat request (text, ``systemInstruction``, inline images,
  function declarations / calls / responses, ``generationConfig``, ``toolConfig``). What has no chat
  equivalent (``fileData``, code execution, Google Search, non-text output) is a BadRequest saying so.
* ``from_completion`` / ``GeminiEvents``: a ``chat.completion`` or its chunks → a
  ``GenerateContentResponse`` or its stream events, ``usageMetadata`` included.
* embeddings both ways, model objects, the error envelope (``{"error": {"code", "message", "status"}}``
  with google.rpc status names) and ``retarget`` (the client's model name → the upstream's in a body).

Facts: Gemini API reference (``models.generateContent``, ``Content``, ``Part``, ``Schema``,
``GenerationConfig``, ``models.batchEmbedContents``) and docs/upstream-api-notes.md.
"""
from __future__ import annotations

import base64
import json
import secrets
import struct
from collections.abc import Mapping
from typing import Any

from proxy.api.shapes import MAX_EMBEDDING_DIMENSIONS, invalid_type, invalid_value, missing, opt, req_obj
from proxy.errors import BadRequest, GatewayError, NotFound

METHODS = ("generateContent", "streamGenerateContent", "countTokens", "embedContent", "batchEmbedContents")

# google.rpc.Code names by HTTP status (https://cloud.google.com/apis/design/errors)
STATUS_NAMES = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    405: "UNIMPLEMENTED", 409: "ABORTED", 413: "INVALID_ARGUMENT", 415: "INVALID_ARGUMENT",
    421: "PERMISSION_DENIED", 422: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
    500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED",
}


def error_body(err: GatewayError) -> dict:
    """Gemini's error envelope for any gateway error."""
    status = STATUS_NAMES.get(err.status, "INTERNAL" if err.status >= 500 else "INVALID_ARGUMENT")
    return {"error": {"code": err.status, "message": err.message, "status": status}}


def split_target(target: str) -> tuple[str, str]:
    """``{model}:{method}`` from the path after ``/v1beta/models/`` (a model name may hold ``:`` itself)."""
    model, sep, method = target.rpartition(":")
    if not sep or not model or method not in METHODS:
        raise NotFound(f"Unknown method in {target!r}: expected models/{{model}}:<{'|'.join(METHODS)}>.",
                       code="not_found")
    return model, method


# ---------------------------------------------------------------------------------------- validation


def _list(obj: Mapping, key: str, path: str, *, required: bool = False) -> list:
    value = obj.get(key)
    if value is None:
        if required:
            missing(path)
        return []
    if not isinstance(value, list):
        invalid_type(path, "an array", value)
    return value


def _content(value: Any, path: str) -> None:
    content = req_obj(value, path)
    opt(content, "role", str, f"{path}.role")
    for j, part in enumerate(_list(content, "parts", f"{path}.parts", required=True)):
        _part(part, f"{path}.parts[{j}]")


def _part(part: Any, path: str) -> None:
    p = req_obj(part, path)
    opt(p, "text", str, f"{path}.text")
    data = opt(p, "inlineData", dict, f"{path}.inlineData")
    if data is not None:
        for key in ("mimeType", "data"):
            if not isinstance(data.get(key), str):
                invalid_type(f"{path}.inlineData.{key}", "a string", data.get(key))
    for key, inner in (("functionCall", "args"), ("functionResponse", "response")):
        call = opt(p, key, dict, f"{path}.{key}")
        if call is not None:
            if not isinstance(call.get("name"), str) or not call["name"]:
                invalid_type(f"{path}.{key}.name", "a non-empty string", call.get("name"))
            opt(call, inner, dict, f"{path}.{key}.{inner}")
            opt(call, "id", str, f"{path}.{key}.id")


def validate_generate(body: dict, path: str = "") -> None:
    """generateContent / streamGenerateContent (and countTokens' ``generateContentRequest``)."""
    for i, content in enumerate(_list(body, "contents", path + "contents", required=True)):
        _content(content, f"{path}contents[{i}]")
    if not body["contents"]:
        invalid_value(path + "contents", "expected at least one content")
    if body.get("systemInstruction") is not None:
        _content({"parts": [], **req_obj(body["systemInstruction"], path + "systemInstruction")},
                 path + "systemInstruction")
    for i, tool in enumerate(_list(body, "tools", path + "tools")):
        t = req_obj(tool, f"{path}tools[{i}]")
        for j, decl in enumerate(_list(t, "functionDeclarations", f"{path}tools[{i}].functionDeclarations")):
            d = req_obj(decl, f"{path}tools[{i}].functionDeclarations[{j}]")
            if not isinstance(d.get("name"), str) or not d["name"]:
                invalid_type(f"{path}tools[{i}].functionDeclarations[{j}].name", "a non-empty string",
                             d.get("name"))
    cfg = opt(body, "generationConfig", dict, path + "generationConfig") or {}
    for key in ("temperature", "topP", "presencePenalty", "frequencyPenalty"):
        value = cfg.get(key)
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            invalid_type(f"{path}generationConfig.{key}", "a number", value)
    for key in ("maxOutputTokens", "candidateCount", "seed", "topK"):
        value = cfg.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            invalid_type(f"{path}generationConfig.{key}", "an integer", value)
    stops = _list(cfg, "stopSequences", f"{path}generationConfig.stopSequences")
    if not all(isinstance(s, str) for s in stops):
        invalid_type(f"{path}generationConfig.stopSequences", "an array of strings", stops)
    opt(cfg, "responseMimeType", str, f"{path}generationConfig.responseMimeType")
    tool_config = opt(body, "toolConfig", dict, path + "toolConfig") or {}
    fcc = opt(tool_config, "functionCallingConfig", dict, path + "toolConfig.functionCallingConfig") or {}
    opt(fcc, "mode", str, path + "toolConfig.functionCallingConfig.mode")
    names_path = path + "toolConfig.functionCallingConfig.allowedFunctionNames"
    names = _list(fcc, "allowedFunctionNames", names_path)
    if not all(isinstance(n, str) for n in names):
        invalid_type(names_path, "an array of strings", names)
    _list(body, "safetySettings", path + "safetySettings")


def validate_count(body: dict) -> None:
    if body.get("generateContentRequest") is not None:
        validate_generate(req_obj(body["generateContentRequest"], "generateContentRequest"),
                          "generateContentRequest.")
    else:
        validate_generate(body)


def validate_embed(body: dict, path: str = "") -> None:
    if body.get("content") is None:
        missing(path + "content")
    _content(body["content"], path + "content")
    dims = body.get("outputDimensionality")
    if dims is not None and (not isinstance(dims, int) or isinstance(dims, bool) or dims < 1):
        invalid_type(path + "outputDimensionality", "a positive integer", dims)
    if dims is not None and dims > MAX_EMBEDDING_DIMENSIONS:
        invalid_value(path + "outputDimensionality", f"at most {MAX_EMBEDDING_DIMENSIONS}")


def validate_batch(body: dict) -> None:
    requests = _list(body, "requests", "requests", required=True)
    if not requests:
        invalid_value("requests", "expected at least one request")
    for i, req in enumerate(requests):
        validate_embed(req_obj(req, f"requests[{i}]"), f"requests[{i}].")


# ---------------------------------------------------------------------------------------- requests


def _schema(schema: Any) -> Any:
    """A Gemini ``Schema`` (OpenAPI subset, upper-case types, ``nullable``) → JSON Schema."""
    if isinstance(schema, list):
        return [_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {name: _schema(sub) for name, sub in value.items()}
        elif key in ("items", "anyOf"):
            out[key] = _schema(value)
        elif key not in ("nullable", "propertyOrdering"):
            out[key] = value
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _untranslatable(what: str) -> BadRequest:
    return BadRequest(f"{what} cannot be translated for this model's upstream (it is not a Gemini upstream); "
                      "use a model served by a Gemini provider", code="untranslatable")


def _present(part: dict) -> dict:
    """The fields of a part that are there (``null`` means absent, as everywhere in the shapes)."""
    return {k: v for k, v in part.items() if v is not None}


def _user_parts(parts: list[dict], path: str) -> list:
    out: list = []
    for j, part in enumerate(map(_present, parts)):
        if part.get("thought") or not part:
            continue
        if "text" in part:
            out.append({"type": "text", "text": part["text"]})
        elif "inlineData" in part:
            data = part["inlineData"]
            if not data["mimeType"].startswith("image/"):
                raise _untranslatable(f"{path}.parts[{j}].inlineData of type {data['mimeType']!r}")
            url = f"data:{data['mimeType']};base64,{data['data']}"
            out.append({"type": "image_url", "image_url": {"url": url}})
        else:
            kind = next(iter(part), "?")
            raise _untranslatable(f"{path}.parts[{j}] ({kind})")
    return out


def _messages(body: Mapping) -> list[dict]:
    messages: list[dict] = []
    system = body.get("systemInstruction")
    if system:
        text = "".join(p.get("text") or "" for p in system.get("parts") or [])
        if text:
            messages.append({"role": "system", "content": text})
    pending: dict[str, list[str]] = {}  # function name → ids of its calls not answered yet
    for i, content in enumerate(body["contents"]):
        path = f"contents[{i}]"
        parts = content["parts"]
        if content.get("role") == "model":
            texts, calls = [], []
            for j, part in enumerate(map(_present, parts)):
                if part.get("thought") or not part:
                    continue
                if "functionCall" in part:
                    fc = part["functionCall"]
                    cid = fc.get("id") or "call_" + secrets.token_hex(6)
                    pending.setdefault(fc["name"], []).append(cid)
                    arguments = json.dumps(fc.get("args") or {})
                    calls.append({"id": cid, "type": "function",
                                  "function": {"name": fc["name"], "arguments": arguments}})
                elif "text" in part:
                    texts.append(part["text"])
                else:
                    raise _untranslatable(f"{path}.parts[{j}] ({next(iter(part), '?')})")
            msg: dict = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            continue
        rest = []
        for j, part in enumerate(map(_present, parts)):
            if "functionResponse" not in part:
                rest.append(part)
                continue
            fr = part["functionResponse"]
            ids = pending.get(fr["name"]) or []
            cid = fr.get("id") if fr.get("id") in ids else (ids[0] if ids else None)
            if cid is None:
                raise BadRequest(f"{path}.parts[{j}].functionResponse {fr['name']!r} answers no earlier "
                                 "functionCall", param=f"{path}.parts[{j}]")
            ids.remove(cid)
            result = json.dumps(fr.get("response") or {})
            messages.append({"role": "tool", "tool_call_id": cid, "content": result})
        user = _user_parts(rest, path)
        if user:
            messages.append({"role": "user", "content": user})
    return messages


def _tools(body: Mapping) -> list[dict]:
    tools = []
    for i, tool in enumerate(body.get("tools") or []):
        for key in tool:
            if key != "functionDeclarations":
                raise _untranslatable(f"tools[{i}].{key}")
        for decl in tool.get("functionDeclarations") or []:
            fn: dict = {"name": decl["name"]}
            if decl.get("description"):
                fn["description"] = decl["description"]
            params = decl.get("parametersJsonSchema") or _schema(decl.get("parameters")) or \
                {"type": "object", "properties": {}}
            fn["parameters"] = params
            tools.append({"type": "function", "function": fn})
    return tools


def _tool_choice(body: Mapping) -> Any:
    fcc = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    mode = (fcc.get("mode") or "AUTO").upper()
    names = fcc.get("allowedFunctionNames") or []
    if mode == "NONE":
        return "none"
    if mode == "ANY":
        if len(names) == 1:
            return {"type": "function", "function": {"name": names[0]}}
        if len(names) > 1:
            raise _untranslatable("toolConfig.functionCallingConfig.allowedFunctionNames with several names")
        return "required"
    if mode in ("AUTO", "MODE_UNSPECIFIED", "VALIDATED"):
        return None
    raise BadRequest(f"unknown toolConfig.functionCallingConfig.mode {mode!r}",
                     param="toolConfig.functionCallingConfig.mode")


_CONFIG = {"temperature": "temperature", "topP": "top_p", "maxOutputTokens": "max_tokens", "seed": "seed",
           "candidateCount": "n", "presencePenalty": "presence_penalty",
           "frequencyPenalty": "frequency_penalty"}


def _config(cfg: Mapping, req: dict) -> None:
    for src, dst in _CONFIG.items():
        if cfg.get(src) is not None:
            req[dst] = cfg[src]
    if cfg.get("stopSequences"):
        req["stop"] = list(cfg["stopSequences"])
    modalities = [m for m in cfg.get("responseModalities") or [] if str(m).upper() != "TEXT"]
    if modalities:
        raise _untranslatable(f"generationConfig.responseModalities {modalities!r}")
    schema = cfg.get("responseJsonSchema") or _schema(cfg.get("responseSchema"))
    if schema:
        req["response_format"] = {"type": "json_schema",
                                  "json_schema": {"name": "response", "schema": schema}}
    elif cfg.get("responseMimeType") == "application/json":
        req["response_format"] = {"type": "json_object"}
    elif cfg.get("responseMimeType") not in (None, "text/plain"):
        raise _untranslatable(f"generationConfig.responseMimeType {cfg['responseMimeType']!r}")


def to_chat_request(body: Mapping, model: str, *, stream: bool = False) -> dict:
    """A (validated) generateContent body → chat request; BadRequest for what a chat upstream cannot take.
    ``safetySettings`` and sampling hints without a chat equivalent (``topK``, thinking) are dropped."""
    req: dict[str, Any] = {"model": model, "messages": _messages(body)}
    if not any(m["role"] != "system" for m in req["messages"]):
        raise BadRequest("contents hold no text, image or function part to send", param="contents")
    tools = _tools(body)
    if tools:
        req["tools"] = tools
        choice = _tool_choice(body)
        if choice is not None:
            req["tool_choice"] = choice
    _config(body.get("generationConfig") or {}, req)
    if stream:
        req["stream"] = True
        req["stream_options"] = {"include_usage": True}
    return req


def estimate_request(body: Mapping, model: str) -> dict:
    """A chat request of the same size as a Gemini body (text only): what admission reserves tokens for
    when the body goes to a Gemini upstream as it is."""
    texts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str):
            texts.append(value)

    walk({k: v for k, v in body.items() if k != "generationConfig"})
    req: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": " ".join(texts)}]}
    max_tokens = (body.get("generationConfig") or {}).get("maxOutputTokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens > 0:
        req["max_tokens"] = max_tokens
    return req


def retarget(method: str, body: dict, upstream_model: str) -> dict:
    """The client's body for the upstream: model names inside it (batch requests, countTokens'
    ``generateContentRequest``) name the upstream's model."""
    resource = "models/" + upstream_model
    if method == "batchEmbedContents":
        return {**body, "requests": [{**r, "model": resource} for r in body.get("requests") or []]}
    if method == "countTokens" and isinstance(body.get("generateContentRequest"), dict):
        return {**body, "generateContentRequest": {**body["generateContentRequest"], "model": resource}}
    return body


# ---------------------------------------------------------------------------------------- answers

_FINISH = {"stop": "STOP", "tool_calls": "STOP", "function_call": "STOP", "length": "MAX_TOKENS",
           "content_filter": "SAFETY"}


def usage_metadata(usage: Mapping | None) -> dict:
    """OpenAI usage → Gemini ``usageMetadata``."""
    usage = usage or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    meta = {"promptTokenCount": prompt, "candidatesTokenCount": completion - reasoning,
            "totalTokenCount": int(usage.get("total_tokens") or prompt + completion)}
    if reasoning:
        meta["thoughtsTokenCount"] = reasoning
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    if cached:
        meta["cachedContentTokenCount"] = cached
    return meta


def _call_part(call: Mapping) -> dict:
    fn = call.get("function") or {}
    try:
        args = json.loads(fn.get("arguments") or "{}")
    except ValueError:
        args = {}
    return {"functionCall": {"id": call.get("id"), "name": fn.get("name") or "",
                             "args": args if isinstance(args, dict) else {"value": args}}}


def from_completion(completion: Mapping, model: str) -> dict:
    """A ``chat.completion`` → a ``GenerateContentResponse`` (``model`` = the client's name)."""
    candidates = []
    for pos, choice in enumerate(completion.get("choices") or []):
        message = choice.get("message") or {}
        parts: list[dict] = []
        if message.get("content"):
            parts.append({"text": message["content"]})
        parts += [_call_part(c) for c in message.get("tool_calls") or []]
        candidates.append({"content": {"role": "model", "parts": parts or [{"text": ""}]},
                           "finishReason": _FINISH.get(choice.get("finish_reason") or "stop", "OTHER"),
                           "index": choice.get("index", pos)})
    return {"candidates": candidates, "usageMetadata": usage_metadata(completion.get("usage")),
            "modelVersion": model, "responseId": _response_id(completion)}


def _response_id(completion: Mapping) -> str:
    return str(completion.get("id") or secrets.token_hex(11))


class GeminiEvents:
    """Chat chunks → Gemini stream events (each a ``GenerateContentResponse``). Text goes out as it comes;
    a function call is sent whole when its arguments are complete (as Gemini does), with the
    ``finishReason`` and the ``usageMetadata`` in the last event."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.rid = secrets.token_hex(11)
        self._calls: dict[int, dict] = {}
        self._finish: str | None = None
        self._usage: Mapping | None = None

    def _event(self, parts: list[dict], finish: str | None = None) -> dict:
        cand: dict = {"content": {"role": "model", "parts": parts}, "index": 0}
        if finish:
            cand["finishReason"] = finish
        event: dict = {"candidates": [cand], "modelVersion": self.model, "responseId": self.rid}
        if finish:
            event["usageMetadata"] = usage_metadata(self._usage)
        return event

    def feed(self, chunk: Mapping) -> list[dict]:
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        out = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out.append(self._event([{"text": delta["content"]}]))
            for tc in delta.get("tool_calls") or []:
                call = self._calls.setdefault(tc.get("index", 0), {"id": None, "function": {"name": "",
                                                                                           "arguments": ""}})
                call["id"] = call["id"] or tc.get("id")
                fn = tc.get("function") or {}
                call["function"]["name"] += fn.get("name") or ""
                call["function"]["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return out

    def finish(self) -> list[dict]:
        parts = [_call_part(self._calls[i]) for i in sorted(self._calls)] or [{"text": ""}]
        return [self._event(parts, _FINISH.get(self._finish or "stop", "OTHER"))]


# ---------------------------------------------------------------------------------------- embeddings


def _embed_text(req: Mapping) -> str:
    parts = [p for p in map(_present, (req.get("content") or {}).get("parts") or []) if p]
    for part in parts:
        if "text" not in part:
            raise _untranslatable(f"an embedding part ({next(iter(part), '?')})")
    return " ".join(p["text"] for p in parts)


def to_embeddings_request(method: str, body: Mapping, model: str) -> dict:
    """embedContent / batchEmbedContents → an OpenAI embeddings request."""
    reqs = body["requests"] if method == "batchEmbedContents" else [body]
    out: dict[str, Any] = {"model": model, "input": [_embed_text(r) for r in reqs],
                           "encoding_format": "float"}
    dims = {r.get("outputDimensionality") for r in reqs}
    if len(dims) > 1:
        raise _untranslatable("outputDimensionality differing between the requests of one batch")
    if dims != {None}:
        out["dimensions"] = dims.pop()
    return out


def _floats(value: Any) -> list[float]:
    if isinstance(value, str):  # base64 little-endian float32, as OpenAI sends with encoding_format=base64
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return list(value or [])


def from_embeddings(method: str, result: Mapping) -> dict:
    vectors = [{"values": _floats(item.get("embedding"))} for item in result.get("data") or []]
    if method == "batchEmbedContents":
        return {"embeddings": vectors}
    return {"embedding": vectors[0] if vectors else {"values": []}}


# ---------------------------------------------------------------------------------------- models


def model_object(name: str) -> dict:
    """A Gemini ``Model`` for a name this gateway serves."""
    return {"name": "models/" + name, "version": "keyrelay", "displayName": name,
            "description": "served by keyrelay", "supportedGenerationMethods": list(METHODS)}
