"""Every OpenAI response shape keyrelay builds conforms to OpenAI's published schemas (issue 11 item 12).

The schemas are cut from OpenAI's OpenAPI description (tests/fixtures/openai-schemas.json, source in its
``.src.txt``); ``$ref`` resolves within that file and OpenAPI 3.0 ``nullable: true`` means "or null".
On top of the published schema, objects keyrelay builds itself are checked strictly: no field the schema
does not name (a misspelt field would otherwise pass unnoticed). The adapters are fed the recorded
upstream payloads in tests/fixtures/ and the shapes the adapters' unit tests use.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from proxy.api.anthropic_shape import openai_to_anthropic_response
from proxy.config import parse_config
from proxy.errors import BadRequest, ModelNotFound, NoKeyAvailable, UpstreamError
from proxy.providers import anthropic as ant
from proxy.providers import gemini_translate as gt
from proxy.providers import ollama as oll
from proxy.providers.anthropic import AnthropicAdapter
from proxy.providers.base import Call, Timeouts
from proxy.providers.gemini import GeminiAdapter
from proxy.providers.mock import MockAdapter
from proxy.providers.ollama import OllamaAdapter
from proxy.providers.openai import OpenAIAdapter
from proxy.relay import Relay
from tests.recording_upstream import RecordingUpstream

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
DOC_URI = "urn:keyrelay:openai-schemas"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
USER = [{"role": "user", "content": "What is the weather in Paris?"}]


# ---------------------------------------------------------------- schema loading


def _nullable(node: Any, strict: bool) -> Any:
    """A schema with OpenAPI 3.0 ``nullable: true`` as JSON Schema ("or null"); strict: objects allow only
    the fields they name."""
    if isinstance(node, list):
        return [_nullable(n, strict) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "$defs"):  # name -> schema
            out[key] = {name: _nullable(sub, strict) for name, sub in value.items()}
        elif key in ("enum", "required", "example", "default", "x-oaiMeta"):
            out[key] = value
        else:
            out[key] = _nullable(value, strict)
    if strict and isinstance(out.get("properties"), dict) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _validator(name: str, strict: bool) -> jsonschema.Draft202012Validator:
    raw = json.loads((FIXTURES / "openai-schemas.json").read_text())
    doc = {"components": {"schemas": {n: _nullable(s, strict) for n, s in raw["schemas"].items()}}}
    resource = Resource.from_contents(doc, default_specification=DRAFT202012)
    registry = Registry().with_resource(DOC_URI, resource)
    schema = {"$ref": f"{DOC_URI}#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


VALIDATORS = {
    (name, strict): _validator(name, strict)
    for name in ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse",
                 "CreateEmbeddingResponse", "ListModelsResponse", "Model", "ErrorResponse")
    for strict in (False, True)
}  # fmt: skip


def conforms(obj: Any, name: str, strict: bool = True) -> None:
    errors = sorted(VALIDATORS[(name, strict)].iter_errors(obj), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])


def completion(obj: dict, strict: bool = True) -> None:
    conforms(obj, "CreateChatCompletionResponse", strict)


def chunks(items: list[dict], strict: bool = True) -> None:
    assert items
    for item in items:
        conforms(item, "CreateChatCompletionStreamResponse", strict)


def test_the_schemas_catch_what_they_should():
    """The validators are not vacuous: a message without ``refusal``, a stray field, a bad finish."""
    good = MockAdapter().chat(Call("mock://local", "mock-1", None), {"model": "m", "messages": USER})
    completion(good)
    bad = json.loads(json.dumps(good))
    del bad["choices"][0]["message"]["refusal"]
    with pytest.raises(AssertionError, match="refusal"):
        completion(bad, strict=False)
    with pytest.raises(AssertionError):
        completion({**good, "choices": [{**good["choices"][0], "finish_reason": "done"}]})
    with pytest.raises(AssertionError):
        completion({**good, "extra": 1})
    completion({**good, "extra": 1}, strict=False)


# ---------------------------------------------------------------- a local upstream serving one payload


class Upstream(RecordingUpstream):
    """Answers every request with one status and body."""

    def __init__(self) -> None:
        super().__init__(200, b"{}")

    def serve(self, payload: bytes | dict, kind: str = "application/json") -> None:
        self.answer(200, payload, kind)

    def call(self, prefix: str, model: str) -> Call:
        return Call(base_url=self.url + prefix, model=model, key="k", timeouts=Timeouts(2, 5, 5))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def stream_req(**extra: Any) -> dict:
    return {"model": "alias", "messages": USER, "stream": True, "stream_options": {"include_usage": True},
            **extra}


# ---------------------------------------------------------------- Gemini


@pytest.mark.parametrize("name", ["gemini-generate-text.json", "gemini-generate-tool-call.json"])
def test_gemini_chat_completion(upstream, name):
    upstream.serve(fixture(name))
    call = upstream.call("/v1beta", "gemini-2.5-flash")
    answer = GeminiAdapter().chat(call, {"model": "a", "messages": USER})
    completion(answer)
    if "tool" in name:
        assert answer["choices"][0]["message"]["tool_calls"]


def test_gemini_blocked_prompt_completion():
    blocked = json.loads(fixture("gemini-stream-prompt-blocked.sse").decode().split("data: ", 1)[1])
    answer = gt.from_gemini_response(blocked, "a")
    completion(answer)
    assert answer["choices"][0]["finish_reason"] == "content_filter"


@pytest.mark.parametrize(
    "name",
    ["gemini-stream-text.sse", "gemini-stream-thinking-functioncall.sse", "gemini-stream-prompt-blocked.sse",
     "gemini-stream-recitation-no-content.sse"],
)  # fmt: skip
def test_gemini_stream_chunks(upstream, name):
    upstream.serve(fixture(name), "text/event-stream")
    out = list(GeminiAdapter().chat_stream(upstream.call("/v1beta", "gemini-2.5-flash"), stream_req()))
    chunks(out)
    assert out[-1]["choices"] == [] and "usage" in out[-1]


def test_gemini_embeddings(upstream):
    upstream.serve({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 1.0]}]})
    out = GeminiAdapter().embeddings(upstream.call("/v1beta", "text-embedding-004"),
                                     {"model": "e", "input": ["a", "b"]})  # fmt: skip
    conforms(out, "CreateEmbeddingResponse")
    conforms(gt.from_gemini_embed({"embedding": {"values": [0.5]}}, "e"), "CreateEmbeddingResponse")


# ---------------------------------------------------------------- Anthropic

ANTHROPIC_ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "thinking", "thinking": "plan", "signature": "s"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "usage": {"input_tokens": 12, "output_tokens": 30, "cache_read_input_tokens": 4},
}


@pytest.mark.parametrize(
    "body",
    [
        ANTHROPIC_ANSWER,
        {**ANTHROPIC_ANSWER, "content": [{"type": "text", "text": "Hi"}], "stop_reason": "end_turn"},
        {**ANTHROPIC_ANSWER, "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {**ANTHROPIC_ANSWER, "content": [], "stop_reason": "refusal"},
    ],
)
def test_anthropic_chat_completion(upstream, body):
    upstream.serve(body)
    completion(AnthropicAdapter().chat(upstream.call("/v1", "claude-x"), {"model": "a", "messages": USER}))


def test_anthropic_stream_chunks(upstream):
    upstream.serve(fixture("anthropic-stream-tool-use.sse"), "text/event-stream")
    out = list(AnthropicAdapter().chat_stream(upstream.call("/v1", "claude-x"), stream_req(tools=TOOLS)))
    chunks(out)
    assert any(c["choices"] and c["choices"][0]["delta"].get("tool_calls") for c in out)
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] > 0


# ---------------------------------------------------------------- OpenAI-compatible (relayed as received)


@pytest.mark.parametrize("name", ["openai-stream-text-usage.sse", "openai-stream-parallel-tool-calls.sse"])
def test_openai_stream_chunks(upstream, name):
    upstream.serve(fixture(name), "text/event-stream")
    out = list(OpenAIAdapter().chat_stream(upstream.call("/v1", "gpt-4o"), stream_req()))
    chunks(out, strict=False)  # what the upstream sent, model renamed: the published schema is the bar


# ---------------------------------------------------------------- Ollama

OLLAMA_LINES = [
    {"model": "llama3.2", "message": {"role": "assistant", "content": "The"}, "done": False},
    {"model": "llama3.2", "message": {"role": "assistant", "content": " sky is blue."}, "done": False},
    {"model": "llama3.2", "message": {"role": "assistant", "content": ""}, "done": True,
     "done_reason": "stop", "prompt_eval_count": 26, "eval_count": 8},
]  # fmt: skip
OLLAMA_TOOLS = {
    "model": "llama3.2",
    "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}},
        {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
    "done": True, "done_reason": "stop", "prompt_eval_count": 40, "eval_count": 12,
}  # fmt: skip


def ndjson(objs: list[dict]) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


@pytest.mark.parametrize("body", [OLLAMA_LINES[-1] | {"message": {"role": "assistant", "content": "Hi"}},
                                  OLLAMA_TOOLS, OLLAMA_LINES[-1] | {"done_reason": "length"}])  # fmt: skip
def test_ollama_chat_completion(upstream, body):
    upstream.serve(body)
    completion(OllamaAdapter().chat(upstream.call("", "llama3.2"), {"model": "a", "messages": USER}))


@pytest.mark.parametrize("lines", [OLLAMA_LINES, [OLLAMA_TOOLS]], ids=["text", "tools"])
def test_ollama_stream_chunks(upstream, lines):
    upstream.serve(ndjson(lines), "application/x-ndjson")
    out = list(OllamaAdapter().chat_stream(upstream.call("", "llama3.2"), stream_req()))
    chunks(out)
    assert out[-1]["choices"] == []


def test_ollama_embeddings(upstream):
    upstream.serve({"model": "nomic", "embeddings": [[0.1, 0.2], [0.3, 0.4]], "prompt_eval_count": 8})
    out = OllamaAdapter().embeddings(upstream.call("", "nomic"), {"model": "e", "input": ["a", "b"]})
    conforms(out, "CreateEmbeddingResponse")


def test_ollama_translators_directly():
    completion(oll.from_ollama_response(OLLAMA_TOOLS, "a"))
    tr = oll.OllamaStreamTranslator("a", include_usage=True)
    chunks([c for line in OLLAMA_LINES for c in tr.feed(line)])


# ---------------------------------------------------------------- the built-in mock


@pytest.mark.parametrize("tools", [None, TOOLS])
def test_mock_chat_and_stream(tools):
    call = Call("mock://local", "mock-1", None)
    req = {"model": "mock-chat", "messages": USER, **({"tools": tools} if tools else {})}
    completion(MockAdapter().chat(call, req))
    chunks(list(MockAdapter().chat_stream(call, {**req, "stream_options": {"include_usage": True}})))


def test_mock_embeddings():
    out = MockAdapter().embeddings(Call("mock://local", "mock-1", None), {"model": "e", "input": ["a", "b"]})
    conforms(out, "CreateEmbeddingResponse")


# ---------------------------------------------------------------- anthropic_shape round trip of a chat answer


def test_anthropic_translation_of_a_refusal_free_answer_is_unchanged():
    """The added ``refusal: null`` does not leak into what Anthropic clients get."""
    answer = ant.from_anthropic_response(ANTHROPIC_ANSWER, "a")
    assert "refusal" not in json.dumps(openai_to_anthropic_response(answer, "a"))


# ---------------------------------------------------------------- model list, model objects, error bodies


def test_model_list_and_model_objects():
    config = parse_config({
        "providers": [{"name": "mock", "type": "mock", "models": ["mock-1", "mock-2"]}],
        "models": [{"name": "mock-chat", "targets": [{"provider": "mock", "model": "mock-1"}]}],
    })  # fmt: skip
    models = Relay(config, pool=None).models()
    conforms({"object": "list", "data": models}, "ListModelsResponse")
    assert [m["id"] for m in models] == ["mock-chat", "mock/mock-1", "mock/mock-2"]
    for model in models:
        conforms(model, "Model")


@pytest.mark.parametrize(
    "err",
    [
        BadRequest("Invalid 'input'.", param="input"),
        ModelNotFound("The model 'x' does not exist.", param="model"),
        NoKeyAvailable("no key"),
        UpstreamError("gemini: quota", outcome="quota", status=429, code="rate_limit_exceeded"),
        UpstreamError("upstream down", outcome="transient"),
    ],
)
def test_error_bodies(err):
    conforms(err.openai_body(), "ErrorResponse")
