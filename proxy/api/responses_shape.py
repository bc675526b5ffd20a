"""OpenAI Responses API ⇄ the internal Chat Completions shape (pure functions over plain data, no I/O).

* ``validate`` checks a ``POST /v1/responses`` body once (400 naming the field, OpenAI's envelope).
* ``input_messages`` / ``to_chat_request`` turn ``instructions`` + ``input`` (a string, or items: messages,
  ``function_call``, ``function_call_output``) + the replayed earlier turns into a chat request.
* ``output_items`` / ``response_object`` build the ``response`` object from a ``chat.completion``.
* ``ResponseEvents`` turns ``chat.completion.chunk``\\ s into the typed stream events, in order:
  ``response.created``, ``response.in_progress``, per output item ``response.output_item.added`` →
  (``response.content_part.added`` → ``response.output_text.delta``… → ``response.output_text.done`` →
  ``response.content_part.done`` | ``response.function_call_arguments.delta``… →
  ``response.function_call_arguments.done``) → ``response.output_item.done``, then
  ``response.completed`` (``response.incomplete`` when cut by ``max_output_tokens``), or
  ``response.failed`` when the upstream fails after the first event.

Shapes follow OpenAI's Responses API reference (``POST /v1/responses``, the response object, the
streaming events).
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

from proxy.api.shapes import invalid_type, invalid_value, missing, opt, opt_int, opt_num, req_obj, req_str
from proxy.errors import BadRequest, GatewayError

_ROLES = ("user", "assistant", "system", "developer")
_TOOL_CHOICES = ("auto", "none", "required")
# fields accepted and ignored: they change nothing a chat upstream could be told
_IGNORED = {"metadata", "user", "truncation", "include", "service_tier", "stream_options", "background",
            "safety_identifier", "prompt_cache_key", "top_logprobs", "max_tool_calls"}
_KNOWN = {"model", "input", "instructions", "tools", "tool_choice", "max_output_tokens", "temperature",
          "top_p", "text", "stream", "store", "previous_response_id", "parallel_tool_calls", "reasoning",
          *_IGNORED}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


# ---------------------------------------------------------------------------------------- validation


def validate(body: dict) -> None:
    """POST /v1/responses: every field an adapter will see, type-checked (400 naming it)."""
    for key in body:
        if key not in _KNOWN:
            raise BadRequest(f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
    req_str(body, "model", "model", empty=False)
    inp = body.get("input")
    if inp is None:
        missing("input")
    if isinstance(inp, list):
        if not inp:
            invalid_value("input", "expected at least one input item")
        for i, item in enumerate(inp):
            _input_item(item, f"input[{i}]")
    elif not isinstance(inp, str):
        invalid_type("input", "a string or an array of input items", inp)
    opt(body, "instructions", str, "instructions")
    for i, tool in enumerate(opt(body, "tools", list, "tools") or []):
        _tool(tool, f"tools[{i}]")
    _tool_choice(body.get("tool_choice"))
    opt_int(body, "max_output_tokens", "max_output_tokens", 1)
    opt_num(body, "temperature", "temperature", 0, 2)
    opt_num(body, "top_p", "top_p", 0, 1)
    for key in ("stream", "store", "parallel_tool_calls", "background"):
        opt(body, key, bool, key)
    if body.get("background"):
        invalid_value("background", "background responses are not supported by this gateway")
    opt(body, "previous_response_id", str, "previous_response_id")
    reasoning = opt(body, "reasoning", dict, "reasoning") or {}
    opt(reasoning, "effort", str, "reasoning.effort")
    text = opt(body, "text", dict, "text") or {}
    fmt = opt(text, "format", dict, "text.format")
    if fmt is not None:
        kind = req_str(fmt, "type", "text.format.type")
        if kind == "json_schema":
            req_str(fmt, "name", "text.format.name", empty=False)
            req_obj(fmt.get("schema"), "text.format.schema")
            opt(fmt, "strict", bool, "text.format.strict")
        elif kind not in ("text", "json_object"):
            invalid_value("text.format.type", "expected 'text', 'json_object' or 'json_schema'")


def _input_item(item: Any, path: str) -> None:
    if not isinstance(item, dict):
        invalid_type(path, "an object", item)
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in _ROLES:
            invalid_value(f"{path}.role", f"expected one of {', '.join(_ROLES)}")
        content = item.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                _content_part(part, f"{path}.content[{j}]")
        elif not isinstance(content, str):
            invalid_type(f"{path}.content", "a string or an array of content parts", content)
    elif kind == "function_call":
        req_str(item, "call_id", f"{path}.call_id", empty=False)
        req_str(item, "name", f"{path}.name", empty=False)
        req_str(item, "arguments", f"{path}.arguments")
    elif kind == "function_call_output":
        req_str(item, "call_id", f"{path}.call_id", empty=False)
        out = item.get("output")
        if isinstance(out, list):
            for j, part in enumerate(out):
                _content_part(part, f"{path}.output[{j}]")
        elif not isinstance(out, str):
            invalid_type(f"{path}.output", "a string or an array of content parts", out)
    elif kind != "reasoning":  # reasoning items carry nothing a chat upstream can take back: dropped
        invalid_value(f"{path}.type", f"input items of type {kind!r} are not supported by this gateway; "
                      "use messages, function_call and function_call_output")


def _content_part(part: Any, path: str) -> None:
    if not isinstance(part, dict):
        invalid_type(path, "an object", part)
    kind = part.get("type")
    if kind in ("input_text", "output_text"):
        req_str(part, "text", f"{path}.text")
    elif kind == "refusal":
        req_str(part, "refusal", f"{path}.refusal")
    elif kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise BadRequest(f"Invalid value for '{path}.image_url': send the image as a URL or a data: URL "
                             "(file ids are not supported by this gateway).", param=f"{path}.image_url",
                             code="invalid_value")
    elif kind == "input_file":
        data = part.get("file_data")
        if not isinstance(data, str) or not data.startswith("data:"):
            raise BadRequest(f"Invalid value for '{path}.file_data': send the file as a base64 data: URL "
                             "(file ids and URLs are not supported by this gateway).",
                             param=f"{path}.file_data", code="invalid_value")
    else:
        invalid_value(f"{path}.type", f"unsupported content part type {kind!r}")


def _tool(tool: Any, path: str) -> None:
    if not isinstance(tool, dict):
        invalid_type(path, "an object", tool)
    if tool.get("type") != "function":
        invalid_value(f"{path}.type", f"only function tools are supported by this gateway, not "
                      f"{tool.get('type')!r}")
    req_str(tool, "name", f"{path}.name", empty=False)
    opt(tool, "description", str, f"{path}.description")
    opt(tool, "parameters", dict, f"{path}.parameters")
    opt(tool, "strict", bool, f"{path}.strict")


def _tool_choice(choice: Any) -> None:
    if choice is None or choice in _TOOL_CHOICES:
        return
    if isinstance(choice, dict) and choice.get("type") == "function":
        req_str(choice, "name", "tool_choice.name", empty=False)
        return
    invalid_value("tool_choice",
                  "expected 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}")


# ---------------------------------------------------------------------------------------- request


def _text(parts: Any) -> str:
    if isinstance(parts, str):
        return parts
    return "".join(p.get("text") or p.get("refusal") or "" for p in parts if isinstance(p, dict))


def _chat_content(content: str | list) -> str | list:
    if isinstance(content, str):
        return content
    out: list[dict] = []
    for part in content:
        kind = part["type"]
        if kind in ("input_text", "output_text"):
            out.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            out.append({"type": "text", "text": part["refusal"]})
        elif kind == "input_image":
            image: dict = {"url": part["image_url"]}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            out.append({"type": "image_url", "image_url": image})
        else:  # input_file
            file: dict = {"file_data": part["file_data"]}
            if isinstance(part.get("filename"), str):
                file["filename"] = part["filename"]
            out.append({"type": "file", "file": file})
    return out


def input_messages(inp: str | list) -> list[dict]:
    """The chat messages for a (validated) ``input``: function calls join the assistant turn before them."""
    if isinstance(inp, str):
        return [{"role": "user", "content": inp}]
    messages: list[dict] = []
    for item in inp:
        kind = item.get("type", "message")
        if kind == "message":
            role = item["role"]
            content = item["content"]
            if role == "assistant":
                messages.append({"role": "assistant", "content": _text(content)})
            else:
                messages.append({"role": role, "content": _chat_content(content)})
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": _text(item["output"])})
    return messages


def _chat_tools(tools: list[dict]) -> list[dict]:
    out = []
    for tool in tools:
        fn: dict = {"name": tool["name"], "parameters": tool.get("parameters") or {"type": "object",
                                                                                   "properties": {}}}
        if tool.get("description"):
            fn["description"] = tool["description"]
        if tool.get("strict") is not None:
            fn["strict"] = tool["strict"]
        out.append({"type": "function", "function": fn})
    return out


def to_chat_request(body: dict, history: list[dict]) -> tuple[dict, list[dict]]:
    """(the chat request, this turn's input as chat messages). ``history`` holds the earlier turns of a
    ``previous_response_id`` chain; ``instructions`` apply to this request only (OpenAI: they are not
    carried over from the previous response)."""
    turn = input_messages(body["input"])
    messages = ([{"role": "system", "content": body["instructions"]}] if body.get("instructions") else [])
    req: dict[str, Any] = {"model": body["model"], "messages": [*messages, *history, *turn]}
    if body.get("tools"):
        req["tools"] = _chat_tools(body["tools"])
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        req["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif choice is not None:
        req["tool_choice"] = choice
    for src, dst in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                     ("parallel_tool_calls", "parallel_tool_calls")):
        if body.get(src) is not None:
            req[dst] = body[src]
    effort = (body.get("reasoning") or {}).get("effort")
    if effort:
        req["reasoning_effort"] = effort
    fmt = (body.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        req["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        req["response_format"] = {"type": "json_schema", "json_schema": schema}
    if body.get("stream"):
        req["stream"] = True
        req["stream_options"] = {"include_usage": True}  # usage feeds the accounting and the last event
    return req, turn


# ---------------------------------------------------------------------------------------- response


def message_item(text: str, item_id: str | None = None, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id or new_id("msg"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}


def function_call_item(call_id: str, name: str, arguments: str, item_id: str | None = None,
                       status: str = "completed") -> dict:
    return {"type": "function_call", "id": item_id or new_id("fc"), "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def output_items(completion: dict) -> list[dict]:
    """The ``output`` of a response from the first choice of a ``chat.completion``."""
    choices = completion.get("choices") or [{}]
    message = choices[0].get("message") or {}
    items = []
    content = message.get("content")
    if isinstance(content, str) and content:
        items.append(message_item(content))
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        items.append(function_call_item(call.get("id") or new_id("call"), fn.get("name") or "",
                                        fn.get("arguments") or "{}"))
    if not items:
        items.append(message_item(""))
    return items


def usage(raw: dict | None) -> dict | None:
    """OpenAI chat usage → Responses usage."""
    if not raw:
        return None
    prompt, completion = int(raw.get("prompt_tokens") or 0), int(raw.get("completion_tokens") or 0)
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": int((raw.get("prompt_tokens_details") or {})
                                                          .get("cached_tokens") or 0)},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": int((raw.get("completion_tokens_details") or {})
                                                              .get("reasoning_tokens") or 0)},
            "total_tokens": int(raw.get("total_tokens") or prompt + completion)}


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_object(rid: str, body: dict, *, created_at: int, output: list[dict], status: str = "completed",
                    finish_reason: str | None = None, raw_usage: dict | None = None,
                    error: dict | None = None) -> dict:
    """A ``response`` object for request ``body`` (its echoed parameters) with ``output``."""
    reason = _INCOMPLETE.get(finish_reason or "")
    if status == "completed" and reason:
        status = "incomplete"
    fmt = (body.get("text") or {}).get("format") or {"type": "text"}
    choice = body.get("tool_choice")
    return {
        "id": rid, "object": "response", "created_at": created_at, "status": status,
        "background": False, "error": error,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"], "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": body.get("store", True), "temperature": body.get("temperature"),
        "text": {"format": fmt}, "tool_choice": "auto" if choice is None else choice,
        "tools": [{"strict": True, **t} if "strict" not in t else t for t in body.get("tools") or []],
        "top_p": body.get("top_p"), "truncation": "disabled", "usage": usage(raw_usage),
        "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


def assistant_turn(output: list[dict]) -> dict:
    """The output of a response as the chat assistant message replayed by a later turn."""
    text = "".join(c.get("text", "") for item in output if item["type"] == "message" for c in item["content"])
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item["arguments"]}}
             for item in output if item["type"] == "function_call"]
    msg: dict = {"role": "assistant", "content": text or (None if calls else "")}
    if calls:
        msg["tool_calls"] = calls
    return msg


def complete(rid: str, body: dict, completion: dict, created_at: int | None = None) -> dict:
    """The ``response`` object for a whole ``chat.completion``."""
    choices = completion.get("choices") or [{}]
    return response_object(rid, body, created_at=created_at or int(time.time()),
                           output=output_items(completion), finish_reason=choices[0].get("finish_reason"),
                           raw_usage=completion.get("usage"))


# ---------------------------------------------------------------------------------------- json_schema by tool
# An upstream whose chat translation has no structured output (Anthropic Messages) is asked for the schema
# as one forced tool call, and the call's arguments come back as the output text (the usual way to get
# schema-shaped JSON from the Messages API).


def schema_as_tool(req: dict) -> dict | None:
    """``req`` asking for its ``json_schema`` as a forced tool call, or None (no schema, or own tools)."""
    fmt = req.get("response_format") or {}
    if fmt.get("type") != "json_schema" or req.get("tools"):
        return None
    schema = fmt.get("json_schema") or {}
    name = schema.get("name") or "response"
    tool = {"type": "function", "function": {"name": name, "parameters": schema.get("schema") or {},
                                             "description": "Give the answer as this JSON object."}}
    out = {k: v for k, v in req.items() if k != "response_format"}
    return {**out, "tools": [tool], "tool_choice": {"type": "function", "function": {"name": name}}}


def tool_as_text(completion: dict) -> dict:
    """A ``chat.completion`` for a ``schema_as_tool`` request: the call's arguments as the content (any
    text beside the call is not the answer)."""
    for choice in completion.get("choices") or []:
        message = choice.get("message") or {}
        calls = message.pop("tool_calls", None) or []
        if calls:
            message["content"] = "".join((c.get("function") or {}).get("arguments") or "" for c in calls)
            choice["finish_reason"] = "stop" if choice.get("finish_reason") == "tool_calls" else \
                choice.get("finish_reason")
    return completion


def tool_chunks_as_text(chunks: Iterator[dict]) -> Iterator[dict]:
    """The chunks of a ``schema_as_tool`` stream, the call's argument fragments as content deltas (any
    text beside the call is not the answer: dropped, as ``tool_as_text`` does)."""
    try:
        for chunk in chunks:
            for choice in chunk.get("choices") or []:
                delta = choice.get("delta") or {}
                calls = delta.pop("tool_calls", None) or []
                text = "".join((c.get("function") or {}).get("arguments") or "" for c in calls)
                if text:
                    delta["content"] = text
                else:
                    delta.pop("content", None)
                if choice.get("finish_reason") == "tool_calls":
                    choice["finish_reason"] = "stop"
            yield chunk
    finally:
        closer = getattr(chunks, "close", None)
        if closer is not None:
            closer()


# ---------------------------------------------------------------------------------------- stream


class ResponseEvents:
    """Chat chunks → Responses stream events ``(type, data)``; ``data`` has ``type`` and ``sequence_number``.

    ``feed(chunk)`` returns the events one chunk produces (the first call opens the response),
    ``finish()`` closes the open items and the response, ``fail(err)`` ends it as ``response.failed``.
    ``response`` is the final response object once ``finish`` or ``fail`` ran."""

    def __init__(self, rid: str, body: dict, created_at: int | None = None) -> None:
        self.rid, self.body = rid, body
        self.created_at = created_at or int(time.time())
        self.seq = 0
        self.started = False
        self.output: list[dict] = []  # items done so far, in output order (open ones too)
        self._text: dict | None = None  # the open message item
        self._calls: dict[int, dict] = {}  # tool call index in the chunks → its open function_call item
        self._finish_reason: str | None = None
        self._usage: dict | None = None
        self.response: dict | None = None

    def _event(self, kind: str, **data: Any) -> tuple[str, dict]:
        event = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return kind, event

    def _snapshot(self, status: str, **extra: Any) -> dict:
        return response_object(self.rid, self.body, created_at=self.created_at, output=list(self.output),
                               status=status, **extra)

    def _start(self, out: list) -> None:
        if not self.started:
            self.started = True
            out.append(self._event("response.created", response=self._snapshot("in_progress")))
            out.append(self._event("response.in_progress", response=self._snapshot("in_progress")))

    def _open(self, item: dict, out: list) -> int:
        index = len(self.output)
        self.output.append(item)
        out.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
        return index

    def _open_text(self, out: list) -> None:
        self._text = message_item("", status="in_progress")
        index = self._open({**self._text, "content": []}, out)
        self.output[index] = self._text
        out.append(self._event("response.content_part.added", item_id=self._text["id"], output_index=index,
                               content_index=0, part={"type": "output_text", "text": "", "annotations": []}))

    def _close_text(self, out: list) -> None:
        item = self._text
        if item is None:
            return
        self._text = None
        index = self.output.index(item)
        part = item["content"][0]
        out.append(self._event("response.output_text.done", item_id=item["id"], output_index=index,
                               content_index=0, text=part["text"], logprobs=[]))
        out.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                               content_index=0, part=dict(part)))
        item["status"] = "completed"
        out.append(self._event("response.output_item.done", output_index=index, item=item))

    def _close_calls(self, out: list) -> None:
        for item in self._calls.values():
            index = self.output.index(item)
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                   output_index=index, name=item["name"], arguments=item["arguments"]))
            item["status"] = "completed"
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        self._calls = {}

    def feed(self, chunk: dict) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        self._start(out)
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        choice = next((c for c in chunk.get("choices") or [] if c.get("index", 0) == 0), None)
        if choice is None:
            return out
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            if self._text is None:
                self._open_text(out)
            assert self._text is not None
            self._text["content"][0]["text"] += text
            out.append(self._event("response.output_text.delta", item_id=self._text["id"],
                                   output_index=self.output.index(self._text), content_index=0, delta=text,
                                   logprobs=[]))
        for call in delta.get("tool_calls") or []:
            self._close_text(out)
            n = call.get("index", 0)
            fn = call.get("function") or {}
            item = self._calls.get(n)
            if item is None:
                item = function_call_item(call.get("id") or new_id("call"), fn.get("name") or "", "",
                                          status="in_progress")
                self._calls[n] = item
                self._open(dict(item), out)
                self.output[-1] = item
            if fn.get("arguments"):
                item["arguments"] += fn["arguments"]
                out.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                       output_index=self.output.index(item), delta=fn["arguments"]))
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
        return out

    def finish(self) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        self._start(out)
        self._close_text(out)
        self._close_calls(out)
        if not self.output:  # an empty answer is still one (empty) message
            self._open_text(out)
            self._close_text(out)
        self.response = self._snapshot("completed", finish_reason=self._finish_reason, raw_usage=self._usage)
        kind = "response.incomplete" if self.response["status"] == "incomplete" else "response.completed"
        out.append(self._event(kind, response=self.response))
        return out

    def fail(self, err: GatewayError) -> list[tuple[str, dict]]:
        out: list[tuple[str, dict]] = []
        self._start(out)
        error = {"code": err.code or "server_error", "message": err.message}
        self.response = self._snapshot("failed", error=error, raw_usage=self._usage)
        out.append(self._event("response.failed", response=self.response))
        return out
