"""Issue 11: what a hostile client sends, through a real gunicorn + gevent keyrelay.

A recording upstream on 127.0.0.1 answers every path (with a 400, so nothing is retried) and keeps the
request line of each call: the proof that no client input chooses the upstream path or query.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time

import pytest
import requests
import yaml

from tests.harness import REPO, Server
from tests.mock_upstream import error
from tests.recording_upstream import RecordingUpstream

TOKEN = "hostile-admin-token-0123456789"


@pytest.fixture(scope="module")
def recorder():
    refusal = {"error": {"code": 400, "message": "recorded", "status": "INVALID_ARGUMENT"}}
    with RecordingUpstream(400, refusal) as r:
        yield r


def _providers(url: str, passthrough: object) -> list[dict]:
    return [
        {
            "name": "gemini",
            "type": "gemini",
            "base_url": url + "/v1beta",
            "keys": ["AIza-hostile-gemini-1"],
            "passthrough": passthrough,
        },
        {
            "name": "oai",
            "type": "openai",
            "base_url": url + "/v1",
            "keys": ["sk-hostile-openai-1"],
            "passthrough": passthrough,
        },
        {
            "name": "claude",
            "type": "anthropic",
            "base_url": url + "/v1",
            "keys": ["sk-ant-hostile-1"],
            "passthrough": passthrough,
        },
        {"name": "llama", "type": "ollama", "base_url": url, "passthrough": passthrough},
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory, recorder):
    config = {
        "server": {"admin_token": TOKEN, "max_body_bytes": 1048576, "allowed_hosts": ["gw.example.test"]},
        "retry": {"attempts": 1},
        "providers": [*_providers(recorder.url, "any"), {"name": "mock", "type": "mock"}],
        "models": [{"name": "mock-chat", "targets": [{"provider": "mock", "model": "mock-1"}]}],
    }
    with Server(tmp_path_factory.mktemp("hostile"), config, workers=1) as gateway:
        yield gateway


def chat(gw, model: object, *, stream: bool = False, **kw) -> requests.Response:
    return requests.post(
        gw.url + "/v1/chat/completions",
        timeout=10,
        **kw,
        json={"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]},
    )


# names that break the grammar: refused with 400 before any upstream call
BAD_NAMES = [
    "gemini/../../../x",
    "gemini/a/../b",
    "oai/../x",
    "gemini/x?key=1",
    "gemini/x#frag",
    "gemini/%2e%2e/x",
    "gemini/a b",
    "gemini/x\u0000",
    "gemini/\u00e9t\u00e9",
    "gemini/\u4e2d\u6587",
    "gemini/x\u2028y",
    "gemini//x",
    "gemini/x/",
    "/x",
    "gemini/" + "a" * 300,
    "a" * 100_000,
    "gemini/x\r\nX-Evil: 1",
    "claude/..",
    "llama/x\ty",
]
# names the grammar allows but that must still not leave the Gemini adapter's one path segment
SEGMENT_NAMES = [
    "gemini/files/abc",
    "gemini/x:streamGenerateContent",
    "gemini/models/a:b",
    "gemini/tunedModels/t1",
    "gemini/cachedContents/c1",
]
ALLOWED_PATH = re.compile(
    r"^(/v1beta/models/[A-Za-z0-9._-]+:(generateContent|streamGenerateContent\?alt=sse|embedContent|"
    r"batchEmbedContents)|/v1/(chat/completions|embeddings|messages|messages/count_tokens)|/api/(chat|embed))$"
)


def test_bad_model_names_are_400_before_any_upstream_call(gw, recorder):
    """Items 1 and 2: the grammar refuses at the door, in the client's envelope, for every endpoint."""
    recorder.requests.clear()
    for name in BAD_NAMES:
        for stream in (False, True):
            r = chat(gw, name, stream=stream)
            assert r.status_code == 400, (name[:40], r.status_code, r.text[:200])
            err = r.json()["error"]
            assert err["code"] == "invalid_model" and err["param"] == "model"
        r = requests.post(gw.url + "/v1/embeddings", json={"model": name, "input": "x"}, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        r = requests.post(
            gw.url + "/v1/messages",
            timeout=10,
            json={"model": name, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 400 and r.json()["type"] == "error", r.text[:200]
    assert recorder.requests == []
    assert "Traceback" not in gw.logs()


def test_no_client_input_chooses_the_upstream_path(gw, recorder):
    """Item 1: whatever model a client names, keyrelay calls only the provider's own endpoints, with
    the model as one encoded path segment (Gemini) or in the body (the others)."""
    recorder.requests.clear()
    names = [
        *BAD_NAMES,
        *SEGMENT_NAMES,
        "gemini/gemini-2.5-flash",
        "oai/gpt-4o",
        "claude/claude-x",
        "llama/llama3.2:1b",
        "oai/meta-llama/llama-3:free",
        "gemini/models/gemini-2.5-flash",
    ]
    for name in names:
        for stream in (False, True):
            r = chat(gw, name, stream=stream)
            assert r.status_code in (400, 404), (name[:40], r.status_code)
            assert r.headers["Content-Type"].startswith("application/json")
        requests.post(gw.url + "/v1/embeddings", json={"model": name, "input": "x"}, timeout=10)
        requests.post(
            gw.url + "/v1/messages/count_tokens",
            timeout=10,
            json={"model": name, "messages": [{"role": "user", "content": "x"}]},
        )
    assert recorder.requests, "the well-formed names must reach the upstream"
    for method, path, _ in recorder.requests:
        assert method == "POST" and ALLOWED_PATH.match(path), path
    gemini_paths = {p for p in recorder.paths if p.startswith("/v1beta/")}
    assert "/v1beta/models/gemini-2.5-flash:generateContent" in gemini_paths
    assert not any("files" in p or "tunedModels" in p or "cachedContents" in p for p in gemini_paths)


def test_unlisted_passthrough_is_404_and_grows_no_state(tmp_path, recorder):
    """Item 3: `passthrough: listed` (the default) routes only the provider's models and the models
    that targets name for it; a provider with neither passes nothing through."""
    providers = _providers(recorder.url, "listed")
    providers[0]["models"] = ["gemini-2.5-flash"]
    providers[1]["passthrough"] = ["gpt-4o*"]
    config = {
        "server": {"admin_token": TOKEN},
        "retry": {"attempts": 1},
        "providers": providers,
        "models": [{"name": "pro", "targets": [{"provider": "gemini", "model": "gemini-2.5-pro"}]}],
    }
    with Server(tmp_path, config, workers=1) as gw:
        recorder.requests.clear()
        for name in ("gemini/gemini-2.5-flash", "gemini/gemini-2.5-pro", "oai/gpt-4o-mini"):
            assert chat(gw, name).status_code == 400, name  # routed: the recorder's 400
        for name in ("gemini/gemini-9-ultra", "oai/o3", "claude/claude-x", "llama/llama3.2"):
            r = chat(gw, name)
            assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found", name
        assert len(recorder.requests) == 3
        ids = {m["id"] for m in requests.get(gw.url + "/v1/models", timeout=5).json()["data"]}
        assert "gemini/gemini-2.5-flash" in ids and "gemini/gemini-9-ultra" not in ids


def test_json_only_and_known_hosts(gw):
    """Item 5: a body must be declared JSON (415 otherwise); a Host keyrelay is not reached by is 421."""
    body = json.dumps({"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]})
    url = gw.url + "/v1/chat/completions"
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": ctype} if ctype else {}
        r = requests.post(url, data=body, headers=headers, timeout=5)
        if ctype is None:  # requests sends no Content-Type for a str body
            assert "Content-Type" not in r.request.headers
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type", ctype
    for ctype in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        assert requests.post(url, data=body, headers={"Content-Type": ctype}, timeout=5).status_code == 200
    r = requests.post(gw.url + "/v1/messages", data="{}", headers={"Content-Type": "text/plain"}, timeout=5)
    assert r.status_code == 415 and r.json()["type"] == "error"

    for host in ("evil.example", "127.0.0.1.evil.example", "localhost.evil", "[::2]"):
        r = requests.post(
            url, data=body, headers={"Content-Type": "application/json", "Host": host}, timeout=5
        )
        assert r.status_code == 421 and r.json()["error"]["code"] == "host_not_allowed", host
        r = requests.get(
            gw.url + "/admin/api/keys", timeout=5, headers={"Host": host, "Authorization": f"Bearer {TOKEN}"}
        )
        assert r.status_code == 421
    for host in (f"127.0.0.1:{gw.port}", f"localhost:{gw.port}", "LOCALHOST", "gw.example.test", "[::1]:80"):
        r = requests.post(
            url, data=body, headers={"Content-Type": "application/json", "Host": host}, timeout=5
        )
        assert r.status_code == 200, host
    assert requests.get(gw.url + "/healthz", headers={"Host": "10.0.0.7"}, timeout=5).status_code == 200


def test_allowed_hosts_star_turns_the_check_off(tmp_path):
    config = {
        "server": {"allowed_hosts": ["*"]},
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "mock-chat", "targets": [{"provider": "mock", "model": "m"}]}],
    }
    with Server(tmp_path, config, workers=1) as gw:
        r = chat(gw, "mock-chat", headers={"Host": "anything.example"})
        assert r.status_code == 200


def _raw(gw, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return out


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_body_limit_holds_for_chunked_bodies_and_bad_framing_is_400(gw):
    """Item 6 (and item 4's framing): 3 MiB past a 1 MiB limit is 413 whether it comes with a
    Content-Length or chunked; a malformed chunk size is a 400 JSON answer, not a 500."""
    big = json.dumps({"model": "mock-chat", "messages": [{"role": "user", "content": "x" * (3 << 20)}]})
    r = requests.post(
        gw.url + "/v1/chat/completions", data=big, headers={"Content-Type": "application/json"}, timeout=30
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    def chunks():
        data = big.encode()
        for i in range(0, len(data), 65536):
            yield data[i : i + 65536]

    r = requests.post(
        gw.url + "/v1/chat/completions",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert r.request.headers.get("Transfer-Encoding") == "chunked"
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"

    small = b'{"model": "mock-chat", "messages": [{"role": "user", "content": "hi"}]}'
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    ok = _raw(gw, head + b"%x\r\n" % len(small) + small + b"\r\n0\r\n\r\n")
    assert _status(ok) == 200
    for bad in (
        b"zz\r\n" + small + b"\r\n0\r\n\r\n",
        b"-5\r\n" + small + b"\r\n0\r\n\r\n",
        b"%x\r\n" % len(small) + small + b"XX0\r\n\r\n",
    ):
        answer = _raw(gw, head + bad)
        assert _status(answer) == 400, answer[:200]
        assert b"application/json" in answer.split(b"\r\n\r\n")[0] and b"<html" not in answer.lower()
    assert "Traceback" not in gw.logs()


def test_request_id_is_echoed_only_when_safe(gw):
    """Item 2: every header keyrelay writes is safe by construction (X-Request-ID is printable ASCII)."""
    ok = chat(gw, "mock-chat", headers={"X-Request-ID": "abc-123"})
    assert ok.headers["X-Request-ID"] == "abc-123"
    odd = chat(gw, "mock-chat", headers={"X-Request-ID": "caf\u00e9".encode().decode("latin-1")})
    assert odd.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", odd.headers["X-Request-ID"])


def test_no_key_answers_tell_no_key_ids_and_admin_diagnoses(tmp_path, mock):
    """Item 7: 503 `no_usable_key` when nothing comes back by itself, 429 `all_keys_cooling` with
    Retry-After when a key does; no key id or operator reason reaches the client; the per-key story is
    in the log (with the request id) and at /admin/api/diagnosis."""
    keys = ["sk-diag-a-0001", "sk-diag-b-0002", "sk-diag-c-0003"]
    config = {
        "server": {"admin_token": TOKEN},
        "retry": {"attempts": 1},
        "providers": [{"name": "up", "type": "openai", "base_url": mock.url + "/v1", "keys": keys}],
        "models": [{"name": "m", "targets": [{"provider": "up", "model": "gpt-4o"}]}],
    }
    mock.script(key=keys[2], behaviour=error(429, headers={"Retry-After": "30"}))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with Server(tmp_path, config, workers=1) as gw:
        ids = {
            k["id"] for k in requests.get(gw.url + "/admin/api/keys", headers=auth, timeout=5).json()["keys"]
        }
        a, b, c = (_id("up", k) for k in keys)
        assert ids == {a, b, c}
        requests.post(
            gw.url + f"/admin/api/keys/{a}/disable",
            json={"reason": "leaked in CI logs"},
            headers=auth,
            timeout=5,
        )
        requests.post(
            gw.url + f"/admin/api/keys/{b}/disable",
            json={"reason": "billing paused"},
            headers=auth,
            timeout=5,
        )
        first = chat(gw, "m")  # the one enabled key answers 429: cooled 30 s
        cooling = chat(gw, "m", headers={"X-Request-ID": "req-cooling-1"})
        assert cooling.status_code == 429 and cooling.json()["error"]["code"] == "all_keys_cooling"
        assert 25 <= int(cooling.headers["Retry-After"]) <= 30
        requests.post(gw.url + f"/admin/api/keys/{c}/disable", json={}, headers=auth, timeout=5)
        none = chat(gw, "m", headers={"X-Request-ID": "req-none-1"})
        assert none.status_code == 503 and none.json()["error"]["code"] == "no_usable_key"
        assert "Retry-After" not in none.headers
        anth = requests.post(
            gw.url + "/v1/messages",
            timeout=5,
            json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        )
        assert anth.status_code == 503 and anth.json()["error"]["type"] == "overloaded_error"
        for r in (first, cooling, none, anth):
            assert not any(i in r.text for i in ids) and "leaked" not in r.text and "billing" not in r.text

        diag = requests.get(gw.url + "/admin/api/diagnosis?model=m", headers=auth, timeout=5).json()
        reasons = {k["id"]: k["reason"] for k in diag["targets"][0]["keys"]}
        assert reasons[a] == "disabled: leaked in CI logs" and reasons[b] == "disabled: billing paused"
        assert diag["usable"] is False and diag["targets"][0]["provider"] == "up"
        bad = requests.get(gw.url + "/admin/api/diagnosis?model=nope", headers=auth, timeout=5)
        assert bad.status_code == 404
        assert requests.get(gw.url + "/admin/api/diagnosis?model=m", timeout=5).status_code == 401
        time.sleep(0.3)
        logged = [json.loads(line) for line in gw.logs().splitlines() if '"no_usable_key"' in line]
        by_request = {e["request_id"]: e for e in logged if e.get("event") == "no_usable_key"}
        assert by_request["req-none-1"]["status"] == 503
        assert "leaked in CI logs" in json.dumps(by_request["req-none-1"]["diagnosis"])
        assert by_request["req-cooling-1"]["status"] == 429


def _id(provider: str, secret: str) -> str:
    from proxy.keys import key_id

    return key_id(provider, secret)


def test_short_admin_token_refused_with_reason(tmp_path):
    """Item 9: at least 16 characters after trimming both sides; check-config says why."""
    base = {"providers": [{"name": "mock", "type": "mock"}]}
    for token, ok in (("x", False), ("   short-token   ", False), ("  0123456789abcdef  ", True)):
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"server": {"admin_token": token}, **base}))
        out = subprocess.run(
            [sys.executable, "-m", "proxy.cli", "check-config", str(path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == (0 if ok else 2), out.stderr
        if not ok:
            assert "server.admin_token" in out.stderr and "at least 16 characters" in out.stderr
            assert token.strip() not in out.stderr
    with Server(tmp_path, {"server": {"admin_token": "  0123456789abcdef  "}, **base}, workers=1) as gw:
        r = requests.get(
            gw.url + "/admin/api/keys", headers={"Authorization": "Bearer 0123456789abcdef"}, timeout=5
        )
        assert r.status_code == 200


def test_refused_reload_quotes_no_secret(tmp_path):
    """Item 10: a refused reload names the bad field, never a secret or a URL's credentials."""
    config = {
        "server": {"admin_token": TOKEN},
        "providers": [{"name": "mock", "type": "mock"}],
        "models": [{"name": "mock-chat", "targets": [{"provider": "mock", "model": "m"}]}],
    }
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with Server(tmp_path, config, workers=1) as gw:
        bad_configs = [
            {
                "name": "up",
                "type": "openai",
                "base_url": "ftp://u:NEWSECRET1@host/v1",
                "keys": ["sk-NEWSECRET2"],
            },
            {
                "name": "up",
                "type": "openai",
                "keys": ["sk-NEWSECRET3"],
                "timeouts": {"connect": "NEWSECRET4x"},
            },
            {"name": "up", "type": "NEWSECRET5", "keys": ["sk-NEWSECRET6"]},
            {"name": "up", "type": "openai", "keys": [{"key": "sk-NEWSECRET7", "weight": "sk-NEWSECRET8"}]},
        ]
        for provider in bad_configs:
            gw.write_config({**config, "providers": [*config["providers"], provider]})
            r = requests.post(gw.url + "/admin/api/reload", headers=auth, timeout=10)
            assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
            assert "providers[1]" in r.text and "NEWSECRET" not in r.text, r.text
        gw.write_config(config)
    assert "NEWSECRET" not in gw.logs()
