"""A client never chooses an upstream path (issue 11 item 1, adapter side).

Every adapter is called with hostile model names against a local server that records the raw request
target of every request. Gemini puts the model into the URL: the name must become exactly one
percent-encoded segment under ``models/`` or be refused (CLIENT 400) before any request is sent. The
other adapters put the model into the JSON body only: their request targets are fixed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from urllib.parse import unquote

import pytest

from proxy.errors import CLIENT, UpstreamError
from proxy.providers import gemini_translate as gt
from proxy.providers.anthropic import AnthropicAdapter
from proxy.providers.base import Call, Timeouts
from proxy.providers.gemini import GeminiAdapter
from proxy.providers.ollama import OllamaAdapter
from proxy.providers.openai import OpenAIAdapter
from tests.recording_upstream import RecordingUpstream

HOSTILE = [
    "../x",
    "..",
    ".",
    "a/../../b",
    "../../../x",
    "files/abc",
    "tunedModels/x",
    "models/../x",
    "models/files/abc",
    "models/",
    "",
    "x:streamGenerateContent",
    "x:generateContent?alt=sse",
    "x?key=1",
    "x#a",
    "%2e%2e",
    "%2fx",
    "a b",
    "a\tb",
    "a\nb",
    "a\x00b",
    "a\x7fb",
    "a\u200bb",  # zero-width space (a format character)
]
ACCEPTED = {  # model name -> the one path segment it becomes
    "gemini-2.5-flash": "gemini-2.5-flash",
    "models/gemini-2.5-flash": "gemini-2.5-flash",
    "text-embedding-004": "text-embedding-004",
    "a+b@c": "a%2Bb%40c",
    "a\\b": "a%5Cb",
}
GEMINI_TARGET = re.compile(
    r"^/v1beta/models/(?P<seg>[A-Za-z0-9._~%-]+)"
    r":(?:generateContent|streamGenerateContent\?alt=sse|embedContent|batchEmbedContents)$"
)
CHAT = {"model": "client-name", "messages": [{"role": "user", "content": "hi"}]}


class Recorder(RecordingUpstream):
    """Records each request target (path + query) and body; answers 404 (so no adapter retries)."""

    def __init__(self, prefix: str) -> None:
        super().__init__(404, b'{"error": {"message": "not found", "type": "not_found_error"}}')
        self.base = self.url + prefix

    @property
    def targets(self) -> list[str]:
        return self.paths

    @property
    def bodies(self) -> list[bytes]:
        return [body for _, _, body in self.requests]

    def call(self, model: str) -> Call:
        return Call(base_url=self.base, model=model, key="k-secret", timeouts=Timeouts(2, 5, 5))


@pytest.fixture
def recorder(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    rec = Recorder(getattr(request, "param", "/v1beta"))
    yield rec
    rec.close()


def _run(fn: Callable[[], object]) -> UpstreamError | None:
    """Run one adapter call; streams are advanced to their first chunk. The error it raised, if any."""
    try:
        out = fn()
        if isinstance(out, Iterator):
            next(out, None)
            out.close()  # type: ignore[attr-defined]
    except UpstreamError as err:
        return err
    return None


def _gemini_calls(rec: Recorder, model: str) -> list[Callable[[], object]]:
    adapter, call = GeminiAdapter(), rec.call(model)
    return [
        lambda: adapter.chat(call, CHAT),
        lambda: adapter.chat_stream(call, {**CHAT, "stream": True}),
        lambda: adapter.embeddings(call, {"model": "e", "input": "one"}),
        lambda: adapter.embeddings(call, {"model": "e", "input": ["one", "two"]}),
    ]


# ---------------------------------------------------------------- Gemini: the model is in the URL


@pytest.mark.parametrize("model", HOSTILE)
def test_gemini_refuses_a_hostile_model_before_any_request(recorder, model):
    for fn in _gemini_calls(recorder, model):
        err = _run(fn)
        assert err is not None and err.outcome == CLIENT and err.status == 400, model
        assert err.code == "invalid_model" and "k-secret" not in err.message
    assert recorder.targets == []


@pytest.mark.parametrize(("model", "segment"), sorted(ACCEPTED.items()))
def test_gemini_url_is_one_segment_under_models(recorder, model, segment):
    for fn in _gemini_calls(recorder, model):
        err = _run(fn)
        assert err is not None and err.upstream_status == 404  # the recorder's answer: the request was sent
    assert len(recorder.targets) == 4
    for target in recorder.targets:
        m = GEMINI_TARGET.match(target)
        assert m, target
        assert m.group("seg") == segment
        assert "/" not in unquote(segment) and unquote(segment) not in (".", "..")
    batch = json.loads(recorder.bodies[-1])
    assert {r["model"] for r in batch["requests"]} == {"models/" + unquote(segment)}


def test_gemini_probe_path_is_fixed(recorder):
    _run(lambda: GeminiAdapter().probe(recorder.call("../../x")))
    assert recorder.targets == ["/v1beta/models?pageSize=1"]


def test_model_id_grammar():
    assert gt.model_id("models/gemini-2.5-flash") == "gemini-2.5-flash"
    assert gt.model_path("models/a+b") == "models/a%2Bb"
    for model in HOSTILE:
        with pytest.raises(UpstreamError):
            gt.model_id(model)


def test_model_id_remembers_only_valid_names():
    for _ in range(2):  # the second round answers from the remembered names, and refuses again
        assert gt.model_id("gemini-2.5-flash") == "gemini-2.5-flash"
        assert gt.model_path("models/a+b") == "models/a%2Bb"
        for model in HOSTILE:
            with pytest.raises(UpstreamError):
                gt.model_id(model)
            with pytest.raises(UpstreamError):
                gt.model_path(model)
    assert not set(HOSTILE) & set(gt._VALID_IDS) and not set(HOSTILE) & set(gt._PATHS)


# ---------------------------------------------------------------- the others: the model is in the body


BODY_ONLY = [
    ("openai", "/v1", OpenAIAdapter, {"/v1/chat/completions", "/v1/embeddings", "/v1/models"}),
    ("anthropic", "/v1", AnthropicAdapter,
     {"/v1/messages", "/v1/messages/count_tokens", "/v1/models?limit=1"}),
    ("ollama", "", OllamaAdapter, {"/api/chat", "/api/embed", "/api/tags"}),
]  # fmt: skip


def _body_only_calls(adapter: object, call: Call) -> list[Callable[[], object]]:
    fns: list[Callable[[], object]] = [
        lambda: adapter.chat(call, CHAT),
        lambda: adapter.chat_stream(call, {**CHAT, "stream": True}),
        lambda: adapter.embeddings(call, {"model": "e", "input": ["one"]}),
        lambda: adapter.probe(call),
    ]
    if isinstance(adapter, AnthropicAdapter):
        body = {"model": "client-name", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}
        fns += [
            lambda: adapter.messages(call, body),
            lambda: adapter.messages_stream(call, {**body, "stream": True}),
            lambda: adapter.count_tokens(call, body),
        ]
    return fns


@pytest.mark.parametrize(("name", "prefix", "make", "allowed"), BODY_ONLY, ids=[b[0] for b in BODY_ONLY])
@pytest.mark.parametrize("model", HOSTILE[:12] + ["a b", "a\x00b"])
def test_model_in_body_never_changes_the_request_target(name, prefix, make, allowed, model):
    rec = Recorder(prefix)
    try:
        for fn in _body_only_calls(make(), rec.call(model)):
            _run(fn)
        assert rec.targets and set(rec.targets) <= allowed, rec.targets
        for body in rec.bodies:
            if body:
                assert json.loads(body)["model"] == model  # the model travels in the body, unchanged
    finally:
        rec.close()
