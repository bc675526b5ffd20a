"""The model catalog on a real gunicorn keyrelay (2 gevent workers, SQLite) against a mock catalog server
serving both formats from the recorded excerpts and the mock upstream (OpenAI dialect, OpenRouter-style
model ids) over real sockets:
* both sources stored, then the ETag 304 path; a failed refresh keeps the last good copy (/readyz details,
  the refresh metric); one refresher at a time with 2 workers;
* a free pool over three free models: a 429 moves to the next, a model whose price turns non-zero leaves
  the pool at the next refresh, the paid twins are never called, none left → 503 no_free_model;
* context-window and modality skips, and the 400 when nothing fits;
* usage priced from the catalog with no ``prices`` in the config, an unpriced model reported as such;
* /v1/models with catalog fields; catalog.file and no network: the gateway starts and serves.
"""
from __future__ import annotations

import json
import time

import pytest
import requests

from tests.harness import FIXTURES, Server
from tests.mock_catalog import MockCatalog, fixture
from tests.mock_upstream import error

TOKEN = "catalog-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
FREE = ["deepseek/deepseek-v4-flash:free", "openai/gpt-oss-20b:free",
        "meta-llama/llama-3.3-70b-instruct:free"]
PAID_TWINS = ["openai/gpt-oss-20b", "meta-llama/llama-3.3-70b-instruct"]
DROPPED = {"google/gemma-4-31b-it:free", "liquid/lfm-2.5-1.2b-instruct:free", "openrouter/free"}


def three_free_models() -> dict:
    """The OpenRouter excerpt without its other free entries: three free models and their paid twins."""
    doc = fixture("openrouter")
    doc["data"] = [m for m in doc["data"] if m["id"] not in DROPPED]
    return doc


def models_dev_without_other_free_models() -> dict:
    doc = fixture("models.dev")
    doc["openrouter"]["models"] = {k: v for k, v in doc["openrouter"]["models"].items() if k not in DROPPED}
    return doc


@pytest.fixture(scope="module")
def catalog():
    with MockCatalog() as m:
        m.set("openrouter", three_free_models())
        m.set("models.dev", models_dev_without_other_free_models())
        yield m


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock, catalog):
    def alias(name: str, *models: str) -> dict:
        return {"name": name, "targets": [{"provider": "openrouter", "model": m} for m in models]}

    config = {
        "server": {"admin_token": TOKEN},
        "providers": [{"name": "openrouter", "type": "openai", "base_url": mock.url + "/v1",
                       "keys": ["sk-or-catalog"], "catalog": "openrouter"}],
        "models": [
            {"name": "free", "free_pool": {"provider": "openrouter", "min_context": 32000, "input": ["text"],
                                           "max_models": 10}},
            alias("small-first", "microsoft/phi-4", "openai/gpt-5-mini"),
            alias("phi", "microsoft/phi-4"),
            alias("vision", "microsoft/phi-4", "google/gemini-2.5-flash"),
            alias("gpt5", "openai/gpt-5-mini"),
            alias("auto", "openrouter/auto"),
        ],
        "catalog": {"sources": ["openrouter", "models.dev"], "urls": catalog.urls, "refresh_s": 21600},
        "key_manager": {"default_cooldown_s": 300},
    }
    server = Server(tmp_path_factory.mktemp("catalog"), config)
    with server:
        wait_until(lambda: "context_length" in model_entry(server, "free"))
        yield server


def wait_until(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def model_entry(gw: Server, model_id: str) -> dict:
    data = requests.get(gw.url + "/v1/models", timeout=5).json()["data"]
    return next(m for m in data if m["id"] == model_id)


def chat(gw: Server, model: str, content: object = "hello there", **extra: object) -> requests.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    return requests.post(gw.url + "/v1/chat/completions", json=body, timeout=30)


def refresh(gw: Server) -> dict:
    r = requests.post(gw.url + "/admin/api/catalog/refresh", headers=ADMIN, timeout=30)
    assert r.status_code == 200, r.text
    time.sleep(1.2)  # every worker reloads its view within RELOAD_CHECK_S
    return r.json()


def entries(gw: Server, **params: str) -> list[dict]:
    r = requests.get(gw.url + "/admin/api/catalog", params=params, headers=ADMIN, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()["entries"]


# ----------------------------------------------------------------------------------------- sources


def test_both_sources_are_stored_then_refreshed_with_a_304(gw, catalog):
    assert {e["provider"] for e in entries(gw)} == {"openrouter", "google", "anthropic"}
    assert [e["model"] for e in entries(gw, provider="openrouter", free="true")] == sorted(FREE)
    assert [e["model"] for e in entries(gw, q="PHI-4")] == ["microsoft/phi-4"]
    before = dict(catalog.not_modified)
    assert refresh(gw)["refreshed"] == {"openrouter": "not_modified", "models.dev": "not_modified"}
    assert catalog.not_modified["openrouter"] == before.get("openrouter", 0) + 1
    assert len(entries(gw, provider="openrouter")) == 15


def test_a_failed_refresh_keeps_the_last_good_copy_and_shows_in_readyz_and_metrics(gw, catalog):
    catalog.status["openrouter"] = 503
    try:
        body = refresh(gw)
        assert body["refreshed"]["openrouter"] == "error"
        assert len(entries(gw, provider="openrouter")) == 15
        ready = requests.get(gw.url + "/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        detail = ready.json()["catalog"]["sources"]["openrouter"]
        assert "HTTP 503" in detail["error"] and detail["entries"] == 15
        metrics = requests.get(gw.url + "/metrics", timeout=5).text
        assert 'keyrelay_catalog_refresh_total{result="error",source="openrouter"} 1.0' in metrics
    finally:
        catalog.status.clear()
    assert refresh(gw)["refreshed"]["openrouter"] == "not_modified"
    assert requests.get(gw.url + "/readyz", timeout=5).json()["catalog"]["sources"]["openrouter"]["error"] \
        is None


# ----------------------------------------------------------------------------------------- /v1/models


def test_v1_models_carries_context_pricing_and_modalities(gw):
    phi = model_entry(gw, "phi")
    assert phi["context_length"] == 16384
    assert phi["pricing"] == {"prompt": "0.000000065", "completion": "0.00000014"}
    assert phi["architecture"] == {"input_modalities": ["text"]}
    assert model_entry(gw, "free")["pricing"] == {"prompt": "0", "completion": "0"}
    assert "pricing" not in model_entry(gw, "auto")  # "-1": unknown, not shown as a price
    print("\n/v1/models:", json.dumps(requests.get(gw.url + "/v1/models", timeout=5).json(), indent=1))


# ----------------------------------------------------------------------------------------- pre-checks


def test_a_prompt_too_long_for_a_target_skips_it_and_400_when_nothing_fits(gw, mock):
    long_text = "word " * 16000  # ~20,000 tokens estimated: more than phi-4's 16,384
    r = chat(gw, "small-first", long_text, max_tokens=100)
    assert r.status_code == 200, r.text
    assert r.headers["X-Keyrelay-Route"] == "openrouter/openai/gpt-5-mini"
    r = chat(gw, "phi", long_text, max_tokens=100)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded" and "openrouter/microsoft/phi-4" in err["message"]
    assert err["details"]["skipped"][0]["reason"] == "context"
    assert mock.count(model="microsoft/phi-4") == 0
    assert '"event":"targets_skipped"' in gw.logs()


def test_an_image_request_skips_a_text_only_target(gw, mock):
    image = [{"type": "text", "text": "what is this?"},
             {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    r = chat(gw, "vision", image)
    assert r.status_code == 200, r.text
    assert r.headers["X-Keyrelay-Route"] == "openrouter/google/gemini-2.5-flash"
    r = chat(gw, "phi", image)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_modality"
    assert mock.count(model="microsoft/phi-4") == 0
    assert chat(gw, "phi").status_code == 200  # a text request still goes there


# ----------------------------------------------------------------------------------------- usage


def usage_by_model(gw: Server, **wanted: int) -> dict[str, dict]:
    """Usage rows per model, once each model in ``wanted`` has at least that many requests recorded."""
    deadline = time.monotonic() + 10
    while True:
        r = requests.get(gw.url + "/admin/api/usage", params={"group_by": "model"}, headers=ADMIN, timeout=5)
        rows = {row["model"]: row for row in r.json()["rows"]}
        if all(rows.get(m, {}).get("requests", 0) >= n for m, n in wanted.items()):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.2)


def test_usage_is_priced_from_the_catalog_and_an_unpriced_model_says_so(gw, mock):
    answered = chat(gw, "gpt5").json()["usage"]  # only this test asks for gpt5 and auto
    assert chat(gw, "auto").status_code == 200
    rows = usage_by_model(gw, gpt5=1, auto=1)
    expected = (answered["prompt_tokens"] * 0.25 + answered["completion_tokens"] * 2.0) / 1e6
    assert rows["gpt5"]["cost_usd"] == pytest.approx(expected) and expected > 0
    assert rows["auto"]["cost_usd"] is None and rows["auto"]["unpriced_requests"] == 1


# ----------------------------------------------------------------------------------------- the free pool


def test_free_pool_fails_over_on_429_drops_a_model_that_became_paid_and_never_calls_a_paid_twin(
        gw, mock, catalog):
    assert [e["model"] for e in entries(gw, provider="openrouter", free="true")] == sorted(FREE)
    mock.script(model=FREE[0], behaviour=error(429), times=1)
    r = chat(gw, "free")
    assert r.status_code == 200, r.text
    assert r.headers["X-Keyrelay-Route"] == f"openrouter/{FREE[1]}"  # the 429 moved it to the next
    assert mock.count(model=FREE[0]) == 1 and mock.count(model=FREE[1]) == 1
    for _ in range(4):  # FREE[0] cools down for this key: the next free model serves, on either worker
        assert chat(gw, "free").headers["X-Keyrelay-Route"] == f"openrouter/{FREE[1]}"
    assert mock.count(model=FREE[0]) == 1  # not asked again while it cools down
    free = usage_by_model(gw, free=5)["free"]
    assert free["cost_usd"] == 0 and free["unpriced_requests"] == 0  # free: priced at $0, not unpriced

    catalog.openrouter_price(FREE[1], "0.0000001", "0.0000002")  # no longer free at the next refresh
    assert refresh(gw)["refreshed"]["openrouter"] == "ok"
    assert FREE[1] not in [e["model"] for e in entries(gw, provider="openrouter", free="true")]
    calls = mock.count(model=FREE[1])
    for _ in range(6):
        r = chat(gw, "free")
        assert r.status_code == 200 and r.headers["X-Keyrelay-Route"] == f"openrouter/{FREE[2]}"
    assert mock.count(model=FREE[1]) == calls

    catalog.openrouter_price(FREE[2], "0.0000001", "0.0000002")
    catalog.openrouter_price(FREE[0], "0.0000001", "0.0000002")
    refresh(gw)
    for _ in range(4):
        r = chat(gw, "free")
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_free_model"
    assert all(mock.count(model=m) == 0 for m in PAID_TWINS)
    catalog.set("openrouter", three_free_models())
    refresh(gw)


# ----------------------------------------------------------------------------------------- workers


def test_one_refresher_at_a_time_with_two_workers(tmp_path, mock):
    with MockCatalog() as slow:
        slow.delay_s = 0.3
        config = {"providers": [{"name": "mock", "type": "mock"}],
                  "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-1"}]}],
                  "catalog": {"urls": slow.urls, "refresh_s": 1}}
        with Server(tmp_path, config, workers=2):
            time.sleep(4.0)
        fetches = dict(slow.requests)
        assert slow.max_in_flight == {"models.dev": 1, "openrouter": 1}, fetches
        # each refresh takes ~0.6 s, then the next is due 1 s later: ~3 in 4 s for both workers together
        assert 2 <= fetches["openrouter"] <= 4 and 2 <= fetches["models.dev"] <= 4, fetches
        assert slow.not_modified["openrouter"] >= 1


def test_catalog_file_and_no_network_the_gateway_starts_and_serves(tmp_path):
    config = {"server": {"admin_token": TOKEN},
              "providers": [{"name": "mock", "type": "mock"}],
              "models": [{"name": "m", "targets": [{"provider": "mock", "model": "mock-1"}]}],
              "catalog": {"file": str(FIXTURES / "modelsdev-api-excerpt.json"),
                          "urls": {"openrouter": "http://127.0.0.1:9/api/v1/models",
                                   "models.dev": "http://127.0.0.1:9/api.json"}}}
    with Server(tmp_path, config, workers=1) as server:
        assert chat(server, "m").status_code == 200
        wait_until(lambda: len(entries(server)) == 11)
        ready = requests.get(server.url + "/readyz", timeout=5)
        assert ready.status_code == 200
        wait_until(lambda: requests.get(server.url + "/readyz", timeout=5).json()["catalog"]["sources"]
                   .get("openrouter", {}).get("error"))
        assert len(entries(server)) == 11  # the failed refresh kept the imported copy
