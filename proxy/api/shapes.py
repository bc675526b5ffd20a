"""Request shapes checked once at the door, for each client dialect (pure functions over plain data).

Every field an adapter reads is type-checked here, so a mistyped field is a 400 that names it (``param``,
e.g. ``messages[2].content[0].type``) whatever the upstream, never a crash further in. Unknown fields and
unknown part/block/tool types pass through untouched (OpenAI-compatible upstreams take vendor extensions;
the adapters that cannot express them answer 400 themselves). ``null`` means absent for optional fields.

Shapes follow the OpenAI Chat Completions / Embeddings and Anthropic Messages request references.
"""
from __future__ import annotations

from typing import Any, NoReturn

from proxy.errors import BadRequest
from proxy.json_depth import MAX_DEPTH, within_depth

MAX_EMBEDDING_DIMENSIONS = 65536

_NAMES = {str: "a string", bool: "a boolean", dict: "an object", list: "an array", int: "an integer"}


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _NAMES.get(type(value), type(value).__name__)


def invalid_type(path: str, expected: str, value: Any) -> NoReturn:
    raise BadRequest(f"Invalid type for '{path}': expected {expected}, but got {_got(value)} instead.",
                     param=path, code="invalid_type")


def invalid_value(path: str, message: str) -> NoReturn:
    raise BadRequest(f"Invalid value for '{path}': {message}.", param=path, code="invalid_value")


def missing(path: str) -> NoReturn:
    raise BadRequest(f"Missing required parameter: '{path}'.", param=path, code="missing_required_parameter")


# ---------------------------------------------------------------- depth


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """400 when containers nest deeper than ``limit`` levels (the body itself is level 1). One pass;
    the recursion stops at ``limit``, so it is bounded whatever the body."""
    if not within_depth(value, limit):
        raise BadRequest(f"Request body is nested more than {limit} levels deep.", code="nesting_too_deep")


# ---------------------------------------------------------------- primitives


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def req_str(obj: dict, key: str, path: str, *, empty: bool = True) -> str:
    value = obj.get(key)
    if value is None:
        missing(path)
    if not isinstance(value, str):
        invalid_type(path, "a string", value)
    if not empty and not value:
        invalid_value(path, "expected a non-empty string")
    return value


def opt(obj: dict, key: str, kind: type, path: str) -> Any:
    """The optional field ``key`` (None when absent or null), or 400 when it is not of ``kind``."""
    value = obj.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        invalid_type(path, _NAMES[kind], value)
    return value


def opt_int(obj: dict, key: str, path: str, lo: int | None = None, hi: int | None = None) -> None:
    value = obj.get(key)
    if value is None:
        return
    if not _is_int(value):
        invalid_type(path, "an integer", value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        invalid_value(path, f"expected an integer in [{lo}, {hi if hi is not None else '...'}], got {value}")


def opt_num(obj: dict, key: str, path: str, lo: float, hi: float) -> None:
    value = obj.get(key)
    if value is None:
        return
    if not _is_num(value):
        invalid_type(path, "a number", value)
    if not lo <= value <= hi:
        invalid_value(path, f"expected a number in [{lo}, {hi}], got {value}")


def opt_choice(obj: dict, key: str, path: str, choices: tuple[str, ...]) -> None:
    value = opt(obj, key, str, path)
    if value is not None and value not in choices:
        invalid_value(path, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")


def req_obj(value: Any, path: str) -> dict:
    if value is None:
        missing(path)
    if not isinstance(value, dict):
        invalid_type(path, "an object", value)
    return value


def str_list(value: Any, path: str) -> None:
    if not isinstance(value, list):
        invalid_type(path, "an array of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            invalid_type(f"{path}[{i}]", "a string", item)


def _items(obj: dict, key: str, path: str, *, required: bool = False) -> list:
    """The array ``key`` (``[]`` when absent), non-empty when ``required``."""
    value = obj.get(key)
    if value is None:
        if required:
            missing(path)
        return []
    if not isinstance(value, list):
        invalid_type(path, "an array", value)
    if required and not value:
        invalid_value(path, "expected a non-empty array")
    return value


def _typed(value: Any, path: str) -> str:
    """An object with a string ``type``: the type."""
    if not isinstance(value, dict):
        invalid_type(path, "an object", value)
    return req_str(value, "type", f"{path}.type")


def _string_map(obj: dict, key: str, path: str) -> None:
    for name, value in (opt(obj, key, dict, path) or {}).items():
        if not isinstance(value, str):
            invalid_type(f"{path}.{name}", "a string", value)


# ---------------------------------------------------------------- OpenAI chat completions

_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def _openai_part(part: Any, path: str) -> None:
    kind = _typed(part, path)
    if kind in ("text", "input_text"):
        req_str(part, "text", f"{path}.text")
    elif kind == "image_url":
        image = part.get("image_url")
        if isinstance(image, str):  # a bare URL string: accepted by the adapters
            return
        req_str(req_obj(image, f"{path}.image_url"), "url", f"{path}.image_url.url")
        opt(image, "detail", str, f"{path}.image_url.detail")
    elif kind == "input_audio":
        audio = req_obj(part.get("input_audio"), f"{path}.input_audio")
        req_str(audio, "data", f"{path}.input_audio.data")
        opt(audio, "format", str, f"{path}.input_audio.format")
    elif kind == "file":
        file = req_obj(part.get("file"), f"{path}.file")
        for key in ("file_data", "file_id", "filename"):
            opt(file, key, str, f"{path}.file.{key}")
    elif kind == "refusal":
        req_str(part, "refusal", f"{path}.refusal")


def _openai_content(msg: dict, path: str) -> None:
    content = msg.get("content")
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        invalid_type(path, "a string or an array of content parts", content)
    for i, part in enumerate(content):
        _openai_part(part, f"{path}[{i}]")


def _function_call(value: Any, path: str) -> None:
    fn = req_obj(value, path)
    req_str(fn, "name", f"{path}.name")
    args = fn.get("arguments")
    if args is not None and not isinstance(args, (str, dict)):
        invalid_type(f"{path}.arguments", "a JSON string", args)


def _openai_message(msg: Any, path: str) -> None:
    if not isinstance(msg, dict):
        invalid_type(path, "an object", msg)
    role = req_str(msg, "role", f"{path}.role")
    if role not in _ROLES:
        invalid_value(f"{path}.role", f"expected one of {', '.join(_ROLES)}, got {role!r}")
    _openai_content(msg, f"{path}.content")
    opt(msg, "name", str, f"{path}.name")
    if role == "assistant":
        for i, call in enumerate(_items(msg, "tool_calls", f"{path}.tool_calls")):
            here = f"{path}.tool_calls[{i}]"
            req_obj(call, here)
            opt(call, "id", str, f"{here}.id")
            opt(call, "type", str, f"{here}.type")
            _function_call(call.get("function"), f"{here}.function")
        if msg.get("function_call") is not None:
            _function_call(msg["function_call"], f"{path}.function_call")
    elif role == "tool":
        opt(msg, "tool_call_id", str, f"{path}.tool_call_id")


def _openai_tools(body: dict) -> None:
    for i, tool in enumerate(_items(body, "tools", "tools")):
        path = f"tools[{i}]"
        if not isinstance(tool, dict):
            invalid_type(path, "an object", tool)
        if opt(tool, "type", str, f"{path}.type") in (None, "function") or tool.get("function") is not None:
            fn = req_obj(tool.get("function"), f"{path}.function")
            req_str(fn, "name", f"{path}.function.name", empty=False)
            opt(fn, "description", str, f"{path}.function.description")
            opt(fn, "parameters", dict, f"{path}.function.parameters")
            opt(fn, "strict", bool, f"{path}.function.strict")
    choice = body.get("tool_choice")
    if choice is None or isinstance(choice, str):
        return
    kind = _typed(choice, "tool_choice")
    if kind == "function" or choice.get("function") is not None:
        req_str(req_obj(choice.get("function"), "tool_choice.function"), "name", "tool_choice.function.name")


def _response_format(body: dict) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    if _typed(fmt, "response_format") == "json_schema":
        spec = req_obj(fmt.get("json_schema"), "response_format.json_schema")
        opt(spec, "name", str, "response_format.json_schema.name")
        opt(spec, "description", str, "response_format.json_schema.description")
        opt(spec, "schema", dict, "response_format.json_schema.schema")
        opt(spec, "strict", bool, "response_format.json_schema.strict")


def _stop(value: Any, path: str) -> None:
    if value is not None and not isinstance(value, str):
        str_list(value, path)


def validate_chat(body: dict) -> None:
    """POST /v1/chat/completions."""
    req_str(body, "model", "model", empty=False)
    for i, msg in enumerate(_items(body, "messages", "messages", required=True)):
        _openai_message(msg, f"messages[{i}]")
    _openai_tools(body)
    _response_format(body)
    _stop(body.get("stop"), "stop")
    for key in ("stream", "logprobs", "parallel_tool_calls", "store"):
        opt(body, key, bool, key)
    for key in ("user", "reasoning_effort", "service_tier"):
        opt(body, key, str, key)
    opt_int(body, "n", "n", 1, 128)
    opt_int(body, "max_tokens", "max_tokens", 1)
    opt_int(body, "max_completion_tokens", "max_completion_tokens", 1)
    opt_int(body, "top_logprobs", "top_logprobs", 0, 20)
    opt_int(body, "seed", "seed")
    opt_num(body, "temperature", "temperature", 0, 2)
    opt_num(body, "top_p", "top_p", 0, 1)
    opt_num(body, "presence_penalty", "presence_penalty", -2, 2)
    opt_num(body, "frequency_penalty", "frequency_penalty", -2, 2)
    _string_map(body, "metadata", "metadata")
    for name, bias in (opt(body, "logit_bias", dict, "logit_bias") or {}).items():
        if not _is_num(bias):
            invalid_type(f"logit_bias.{name}", "a number", bias)
    options = opt(body, "stream_options", dict, "stream_options")
    if options:
        opt(options, "include_usage", bool, "stream_options.include_usage")
    if body.get("modalities") is not None:
        str_list(body["modalities"], "modalities")


# ---------------------------------------------------------------- OpenAI embeddings


def validate_embeddings(body: dict) -> None:
    """POST /v1/embeddings: ``input`` is a string, or an array of strings, token ids or token id arrays."""
    req_str(body, "model", "model", empty=False)
    value = body.get("input")
    if value is None:
        missing("input")
    if isinstance(value, str):
        if not value:
            invalid_value("input", "expected a non-empty string")
    elif isinstance(value, list):
        if not value:
            invalid_value("input", "expected a non-empty array")
        for i, item in enumerate(value):
            if isinstance(item, str) or _is_int(item):
                continue
            if not isinstance(item, list) or not all(_is_int(t) for t in item):
                invalid_type(f"input[{i}]", "a string, a token id or an array of token ids", item)
    else:
        invalid_type("input", "a string or an array", value)
    opt_choice(body, "encoding_format", "encoding_format", ("float", "base64"))
    opt_int(body, "dimensions", "dimensions", 1, MAX_EMBEDDING_DIMENSIONS)
    opt(body, "user", str, "user")


# ---------------------------------------------------------------- Anthropic messages


def _source(block: dict, path: str) -> None:
    source = req_obj(block.get("source"), f"{path}.source")
    kind = req_str(source, "type", f"{path}.source.type")
    if kind == "base64":
        req_str(source, "data", f"{path}.source.data")
        req_str(source, "media_type", f"{path}.source.media_type")
    elif kind == "url":
        req_str(source, "url", f"{path}.source.url")
    elif kind == "file":
        req_str(source, "file_id", f"{path}.source.file_id")
    elif kind == "text":
        req_str(source, "data", f"{path}.source.data")
    elif kind == "content":
        content = source.get("content")
        if not isinstance(content, (str, list)):
            invalid_type(f"{path}.source.content", "a string or an array of content blocks", content)
        if isinstance(content, list):
            for i, inner in enumerate(content):
                _anthropic_block(inner, f"{path}.source.content[{i}]")


def _anthropic_block(block: Any, path: str) -> None:
    kind = _typed(block, path)
    if kind == "text":
        req_str(block, "text", f"{path}.text")
    elif kind in ("image", "document"):
        _source(block, path)
    elif kind == "tool_use":
        req_str(block, "id", f"{path}.id")
        req_str(block, "name", f"{path}.name")
        req_obj(block.get("input"), f"{path}.input")
    elif kind == "tool_result":
        req_str(block, "tool_use_id", f"{path}.tool_use_id")
        opt(block, "is_error", bool, f"{path}.is_error")
        content = block.get("content")
        if isinstance(content, list):
            for i, inner in enumerate(content):
                _anthropic_block(inner, f"{path}.content[{i}]")
        elif content is not None and not isinstance(content, str):
            invalid_type(f"{path}.content", "a string or an array of content blocks", content)
    elif kind == "thinking":
        req_str(block, "thinking", f"{path}.thinking")
        opt(block, "signature", str, f"{path}.signature")
    elif kind == "redacted_thinking":
        req_str(block, "data", f"{path}.data")


def _anthropic_message(msg: Any, path: str) -> None:
    if not isinstance(msg, dict):
        invalid_type(path, "an object", msg)
    role = req_str(msg, "role", f"{path}.role")
    if role not in ("user", "assistant"):
        invalid_value(f"{path}.role", f"expected 'user' or 'assistant', got {role!r}")
    content = msg.get("content")
    if content is None:
        missing(f"{path}.content")
    if isinstance(content, list):
        for i, block in enumerate(content):
            _anthropic_block(block, f"{path}.content[{i}]")
    elif not isinstance(content, str):
        invalid_type(f"{path}.content", "a string or an array of content blocks", content)


def _anthropic_tools(body: dict) -> None:
    for i, tool in enumerate(_items(body, "tools", "tools")):
        path = f"tools[{i}]"
        if not isinstance(tool, dict):
            invalid_type(path, "an object", tool)
        req_str(tool, "name", f"{path}.name", empty=False)
        opt(tool, "description", str, f"{path}.description")
        if opt(tool, "type", str, f"{path}.type") in (None, "custom"):
            req_obj(tool.get("input_schema"), f"{path}.input_schema")
    choice = body.get("tool_choice")
    if choice is None:
        return
    kind = _typed(choice, "tool_choice")
    if kind not in ("auto", "any", "tool", "none"):
        invalid_value("tool_choice.type", f"expected one of auto, any, tool, none, got {kind!r}")
    if kind == "tool":
        req_str(choice, "name", "tool_choice.name", empty=False)
    opt(choice, "disable_parallel_tool_use", bool, "tool_choice.disable_parallel_tool_use")


def validate_messages(body: dict, *, count_tokens: bool = False) -> None:
    """POST /v1/messages (and /v1/messages/count_tokens, which takes no ``max_tokens``)."""
    req_str(body, "model", "model", empty=False)
    if not count_tokens:
        if body.get("max_tokens") is None:
            missing("max_tokens")
        opt_int(body, "max_tokens", "max_tokens", 1)
    for i, msg in enumerate(_items(body, "messages", "messages", required=True)):
        _anthropic_message(msg, f"messages[{i}]")
    system = body.get("system")
    if isinstance(system, list):
        for i, block in enumerate(system):
            path = f"system[{i}]"
            if _typed(block, path) != "text":
                invalid_value(f"{path}.type", "only text blocks are allowed in system")
            req_str(block, "text", f"{path}.text")
    elif system is not None and not isinstance(system, str):
        invalid_type("system", "a string or an array of text blocks", system)
    _anthropic_tools(body)
    if body.get("stop_sequences") is not None:
        str_list(body["stop_sequences"], "stop_sequences")
    opt(body, "stream", bool, "stream")
    opt(body, "service_tier", str, "service_tier")
    opt_num(body, "temperature", "temperature", 0, 1)
    opt_num(body, "top_p", "top_p", 0, 1)
    opt_int(body, "top_k", "top_k", 0)
    metadata = opt(body, "metadata", dict, "metadata")
    if metadata:
        opt(metadata, "user_id", str, "metadata.user_id")
    thinking = body.get("thinking")
    if thinking is not None and _typed(thinking, "thinking") == "enabled":
        if thinking.get("budget_tokens") is None:
            missing("thinking.budget_tokens")
        opt_int(thinking, "budget_tokens", "thinking.budget_tokens", 1)
