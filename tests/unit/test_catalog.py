"""The model catalog: both parsers against the recorded excerpts, the merge, the store (replace, ETag 304,
a failed refresh keeping the last good copy, the refresh claim), free pools, capability pre-checks,
prices feeding usage cost, the config keys and the CLI. The store parts run on both backends."""
from __future__ import annotations

import json
import os

import pytest

from proxy.catalog import capabilities, refresh
from proxy.catalog import view as cview
from proxy.catalog.parse import (
    MODELS_DEV,
    OPENROUTER,
    CatalogFormatError,
    Entry,
    detect,
    merge,
    merge_all,
    parse,
)
from proxy.catalog.service import Catalog, NoFreeModel
from proxy.clients.model import Finished, Usage
from proxy.clients.usage import UsageLog
from proxy.config import ConfigError, FreePoolConfig, TargetConfig, parse_config
from proxy.errors import BadRequest
from proxy.relay import Trace
from tests.mock_catalog import MockCatalog, fixture


def cfg(**extra: object):
    data: dict = {
        "providers": [{"name": "or", "type": "openai", "base_url": "http://127.0.0.1:9/v1", "keys": ["sk-or"],
                       "catalog": "openrouter"},
                      {"name": "gem", "type": "gemini", "keys": ["AIza-test"]}],
        "models": [{"name": "free", "free_pool": {"provider": "or", "min_context": 32000}},
                   {"name": "small", "targets": [{"provider": "or", "model": "microsoft/phi-4"},
                                                 {"provider": "or", "model": "openai/gpt-5-mini"}]}],
        "auth": {"mode": "open"}}
    data.update(extra)
    return parse_config(data)


@pytest.fixture
def store(any_store):
    return any_store


@pytest.fixture
def mock_catalog():
    with MockCatalog() as m:
        yield m


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# ----------------------------------------------------------------------------------------- parsing


def test_openrouter_excerpt_parses_prices_per_million_context_modalities_and_free_variants():
    entries = {e.model: e for e in parse(fixture("openrouter"))}
    assert len(entries) == 18 and all(e.provider == OPENROUTER and e.source == OPENROUTER
                                      for e in entries.values())
    assert sorted(m for m in entries if m.endswith(":free")) == [
        "deepseek/deepseek-v4-flash:free", "google/gemma-4-31b-it:free", "liquid/lfm-2.5-1.2b-instruct:free",
        "meta-llama/llama-3.3-70b-instruct:free", "openai/gpt-oss-20b:free"]
    assert all(entries[m].free for m in entries if m.endswith(":free"))
    paid = entries["openai/gpt-oss-20b"]
    assert (paid.price_input, paid.price_output, paid.free) == (0.03, 0.14, False)
    assert paid.context == 131072 and paid.input_modalities == ("text",)
    flash = entries["google/gemini-2.5-flash"]
    assert (flash.price_input, flash.price_output) == (0.3, 2.5) and "image" in flash.input_modalities
    lfm = entries["liquid/lfm-2.5-1.2b-instruct:free"]
    assert lfm.context == 32768 and lfm.max_output is None  # max_completion_tokens null
    auto = entries["openrouter/auto"]  # pricing "-1": unknown, never $0 and never free
    assert auto.price_input is None and auto.price_output is None and not auto.free
    assert entries["deepseek/deepseek-v4-flash:free"].tools is True


def test_models_dev_excerpt_parses_costs_per_million_and_limits():
    entries = {(e.provider, e.model): e for e in parse(fixture("models.dev"))}
    assert len(entries) == 11 and {p for p, _ in entries} == {"google", "openrouter", "anthropic"}
    flash = entries[("google", "gemini-2.5-flash")]
    assert (flash.price_input, flash.price_output, flash.price_cached_input) == (0.3, 2.5, 0.03)
    assert flash.context == 1048576 and flash.max_output == 65536 and flash.tools and flash.reasoning
    assert "image" in flash.input_modalities and flash.source == MODELS_DEV
    assert all(e.free for (p, m), e in entries.items() if m.endswith(":free"))


def test_detect_and_bad_documents():
    assert detect(fixture("openrouter")) == OPENROUTER and detect(fixture("models.dev")) == MODELS_DEV
    for bad in ({"x": 1}, [], "text", {"data": []}):
        with pytest.raises(CatalogFormatError):
            parse(bad)


def test_merge_prefers_the_providers_own_source_and_fills_gaps():
    merged = merge_all(parse(fixture("openrouter")) + parse(fixture("models.dev")))
    assert len(merged) == 18 + 11 - 5  # models.dev's five openrouter models are also in OpenRouter's list
    assert merged[("openrouter", "google/gemini-2.5-flash")].source == OPENROUTER
    assert merged[("google", "gemini-2.5-flash")].source == MODELS_DEV
    a = Entry("openrouter", "m", OPENROUTER, context=1000)
    b = Entry("openrouter", "m", MODELS_DEV, context=5, max_output=7, price_input=1.0, price_output=2.0,
              input_modalities=("text",))
    m = merge(a, b)
    assert (m.context, m.max_output, m.price_input, m.price_output, m.input_modalities) == \
        (1000, 7, 1.0, 2.0, ("text",))


# ----------------------------------------------------------------------------------------- store + refresh


def sources_cfg(mock: MockCatalog, **catalog: object):
    return cfg(catalog={"sources": ["models.dev", "openrouter"], "urls": mock.urls, **catalog})


def test_refresh_stores_both_sources_then_takes_the_etag_304_path(store, mock_catalog):
    cat = Catalog(sources_cfg(mock_catalog), store, Clock())
    assert cat.refresh() == {"models.dev": "ok", "openrouter": "ok"}
    assert len(cat.reload().entries) == 24
    version = cat.view().version
    assert cat.refresh() is None  # not due yet: nobody refreshes
    assert cat.refresh(force=True) == {"models.dev": "not_modified", "openrouter": "not_modified"}
    assert mock_catalog.not_modified == {"models.dev": 1, "openrouter": 1}
    assert len(cat.reload().entries) == 24 and cat.view().version == version  # same rows: no reload
    status = cat.status()
    assert status["openrouter"]["entries"] == 18 and status["openrouter"]["error"] is None
    assert status["openrouter"]["etag"].startswith('"')


def test_a_failed_refresh_keeps_the_last_good_copy_and_says_why(store, mock_catalog):
    cat = Catalog(sources_cfg(mock_catalog), store, Clock())
    cat.refresh()
    mock_catalog.status["openrouter"] = 500
    mock_catalog.set("models.dev", {"not": "a catalog"})
    assert cat.refresh(force=True) == {"models.dev": "error", "openrouter": "error"}
    assert len(cat.reload().entries) == 24
    status = cat.status()
    assert "HTTP 500" in status["openrouter"]["error"] and status["openrouter"]["entries"] == 18
    assert status["models.dev"]["error"] and status["models.dev"]["entries"] == 11
    mock_catalog.status.clear()
    assert cat.refresh(force=True)["openrouter"] == "not_modified"
    assert cat.status()["openrouter"]["error"] is None


def test_a_changed_document_replaces_the_sources_rows(store, mock_catalog):
    cat = Catalog(sources_cfg(mock_catalog), store, Clock())
    cat.refresh()
    mock_catalog.openrouter_price("openai/gpt-oss-20b:free", "0.0000001", "0.0000002")
    assert cat.refresh(force=True)["openrouter"] == "ok"
    e = cat.reload().entries[("openrouter", "openai/gpt-oss-20b:free")]
    assert (e.free, e.price_input, e.price_output) == (False, 0.1, 0.2)


def test_network_down_stores_nothing_and_breaks_nothing(store):
    cat = Catalog(cfg(catalog={"urls": {"openrouter": "http://127.0.0.1:9/x", "models.dev": "http://127.0.0.1:9/y"}}),
                  store, Clock())
    assert cat.refresh() == {"models.dev": "error", "openrouter": "error"}
    assert cat.reload().entries == {}
    assert cat.precheck({"model": "small", "messages": []}, [TargetConfig("or", "x")], Trace())


def test_one_refresher_at_a_time(store, any_backend):
    other = any_backend.open()  # another worker's connection
    try:
        assert refresh.claim(store, "w1", 100.0, force=False)
        assert not refresh.claim(other, "w2", 101.0, force=False)
        assert not refresh.claim(other, "w2", 101.0, force=True)  # a live claim holds even a forced one
        refresh.release(store, "w1", next_due=200.0)
        assert not refresh.claim(other, "w2", 150.0, force=False)  # not due
        assert refresh.claim(other, "w2", 150.0, force=True)
        refresh.release(store, "w1", next_due=999.0)  # not the owner: changes nothing
        assert not refresh.claim(store, "w1", 151.0, force=True)
        assert refresh.claim(store, "w1", 150.0 + refresh.CLAIM_LEASE_S + 1, force=True)  # the lease expired
    finally:
        other.close()


def test_import_file_either_format_and_only_when_newer(store, tmp_path):
    path = tmp_path / "or.json"
    path.write_text(json.dumps(fixture("openrouter")))
    mtime = path.stat().st_mtime
    assert refresh.import_file_if_newer(store, str(path), mtime + 1) == ("openrouter", 18)
    assert refresh.import_file_if_newer(store, str(path), mtime + 2) is None  # the stored copy is newer
    os.utime(path, (mtime + 10, mtime + 10))
    assert refresh.import_file_if_newer(store, str(path), mtime + 11) == ("openrouter", 18)
    assert refresh.import_file_if_newer(store, str(tmp_path / "missing.json"), 1.0) is None
    with pytest.raises(CatalogFormatError):
        refresh.import_document(store, {"nope": 1}, "file:x", 1.0)
    assert refresh.import_document(store, fixture("models.dev"), "file:y", 3.0) == ("models.dev", 11)


# ----------------------------------------------------------------------------------------- free pools


def loaded(store, config=None, doc=None) -> Catalog:
    refresh.import_document(store, doc or fixture("openrouter"), "file:x", 1.0)
    return Catalog(config or cfg(), store, Clock())


def test_free_pool_orders_by_context_then_newest_and_never_takes_a_priced_model(store):
    cat = loaded(store)
    pool = FreePoolConfig("or", min_context=32000, input=("text",), max_models=10)
    models = [t.model for t in cat.free_targets("free", pool)]
    assert models == ["deepseek/deepseek-v4-flash:free", "google/gemma-4-31b-it:free", "openrouter/free",
                      "openai/gpt-oss-20b:free", "meta-llama/llama-3.3-70b-instruct:free",
                      "liquid/lfm-2.5-1.2b-instruct:free"]
    assert [t.model for t in cat.free_targets("free", FreePoolConfig("or", 100_000, ("text", "image"), 2))] \
        == ["google/gemma-4-31b-it:free", "openrouter/free"]
    with pytest.raises(NoFreeModel) as err:
        cat.free_targets("free", FreePoolConfig("or", 10_000_000))
    assert err.value.status == 503 and err.value.code == "no_free_model"
    lying = Entry("openrouter", "x:free", OPENROUTER, context=10**6, free=True, price_input=0.0,
                  price_output=0.5)
    view = cview.View.of([lying], 1)
    assert not cview.free_models(view, cat.config.provider("or"), pool)


def test_target_matching_by_type_base_url_and_explicit_reference():
    config = parse_config({"providers": [
        {"name": "g", "type": "gemini", "keys": ["k"]},
        {"name": "ora", "type": "openai", "base_url": "https://openrouter.ai/api/v1", "keys": ["k"]},
        {"name": "oai", "type": "openai", "keys": ["k"]},
        {"name": "x", "type": "openai", "base_url": "http://127.0.0.1:1/v1", "keys": ["k"],
         "catalog": "models.dev:anthropic"},
        {"name": "o", "type": "ollama"}], "models": []})
    refs = {p.name: cview.catalog_provider(p) for p in config.providers}
    assert refs == {"g": "google", "ora": "openrouter", "oai": "openai", "x": "anthropic", "o": None}


# ----------------------------------------------------------------------------------------- pre-checks


def test_needs_counts_prompt_plus_max_tokens_and_media():
    req = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a" * 400},
                                                     {"type": "image_url", "image_url": {"url": "x"}}]}],
           "max_tokens": 1000, "tools": [{"type": "function", "function": {"name": "f"}}]}
    need = capabilities.needs(req)
    assert need.modalities == {"image"} and need.tools and need.tokens == need.prompt_tokens + 1000
    assert need.prompt_tokens >= 100


def test_precheck_skips_small_context_and_text_only_targets_and_400_when_none_fits(store):
    cat = loaded(store)
    phi, mini = TargetConfig("or", "microsoft/phi-4"), TargetConfig("or", "openai/gpt-5-mini")
    unknown = TargetConfig("or", "not/in-catalog")
    big = {"model": "small", "messages": [{"role": "user", "content": "word " * 16000}], "max_tokens": 500}
    trace = Trace()
    assert cat.precheck(big, [phi, mini], trace) == [mini]
    assert trace.skipped[0]["target"] == "or/microsoft/phi-4" and trace.skipped[0]["reason"] == "context"
    assert cat.precheck(big, [phi, unknown], Trace()) == [unknown]  # unknown: never skipped
    with pytest.raises(BadRequest) as err:
        cat.precheck(big, [phi], Trace())
    assert err.value.code == "context_length_exceeded" and "or/microsoft/phi-4" in err.value.message
    image = {"model": "v", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}
    assert cat.precheck(image, [phi, mini], Trace()) == [mini]
    with pytest.raises(BadRequest) as err:
        cat.precheck(image, [phi], Trace())
    assert err.value.code == "unsupported_modality" and err.value.status == 400
    assert err.value.details["skipped"][0]["reason"] == "modality"
    tools = {"model": "t", "messages": [], "tools": [{"type": "function", "function": {"name": "f"}}]}
    lfm, deepseek = (TargetConfig("or", m) for m in ("liquid/lfm-2.5-1.2b-instruct:free",
                                                     "deepseek/deepseek-v4-flash:free"))
    assert cat.precheck(tools, [lfm, deepseek], Trace()) == [deepseek]  # lfm lists no "tools" parameter
    with pytest.raises(BadRequest) as err:
        cat.precheck(tools, [lfm], Trace())
    assert err.value.details["skipped"][0]["reason"] == "tools"


# ----------------------------------------------------------------------------------------- prices → usage


def done(model: str, upstream: str, provider: str = "or") -> Finished:
    return Finished(at=1.0, request_id="r", endpoint="/v1/chat/completions", client=None, model=model,
                    provider=provider, upstream_model=upstream, key_id="k_x", status=200, outcome="ok",
                    usage=Usage(prompt=1000, completion=500), latency_ms=1.0, first_byte_ms=1.0, stream=False,
                    admission=None, streamed_chars=0)


def test_catalog_prices_cost_when_the_config_has_none_and_config_prices_win(store):
    cat = loaded(store)
    usage = UsageLog(cfg(), store)
    usage.fallback_price = cat.price
    assert usage.cost(done("small", "openai/gpt-5-mini")) == pytest.approx((1000 * 0.25 + 500 * 2.0) / 1e6)
    assert usage.cost(done("free", "openai/gpt-oss-20b:free")) == 0.0  # free: priced at 0, not unpriced
    assert usage.cost(done("x", "openrouter/auto")) is None  # "-1": unpriced
    assert usage.cost(done("x", "not/in-catalog")) is None
    priced = UsageLog(cfg(prices={"openai/gpt-5-mini": {"input": 1.0, "output": 1.0}}), store)
    priced.fallback_price = cat.price
    assert priced.cost(done("small", "openai/gpt-5-mini")) == pytest.approx(1500 / 1e6)


def test_models_fields_as_openrouter_names_them(store):
    cat = loaded(store)
    fields = cat.model_fields("small")
    assert fields == {"context_length": 16384,
                      "pricing": {"prompt": "0.000000065", "completion": "0.00000014"},
                      "architecture": {"input_modalities": ["text"]}}
    assert cat.model_fields("free")["context_length"] == 1048576
    assert cat.model_fields("or/openai/gpt-5-mini")["pricing"] == {"prompt": "0.00000025",
                                                                   "completion": "0.000002"}
    assert cat.model_fields("nothing") == {}


# ----------------------------------------------------------------------------------------- config


def test_config_keys_and_their_errors():
    c = cfg(catalog={"sources": ["openrouter"], "refresh_s": 60, "file": "/x.json",
                     "urls": {"openrouter": "http://127.0.0.1:1/m"}})
    assert c.catalog.sources == ("openrouter",) and c.catalog.refresh_s == 60 and c.catalog.file == "/x.json"
    assert c.catalog.urls["openrouter"] == "http://127.0.0.1:1/m"
    assert c.catalog.urls["models.dev"] == "https://models.dev/api.json"
    pool = c.model("free").free_pool
    assert pool == FreePoolConfig("or", 32000, ("text",), 10) and c.model("free").targets == ()
    bad = [
        ({"catalog": {"sources": ["nope"]}}, "catalog.sources"),
        ({"catalog": {"refresh_s": 0}}, "catalog.refresh_s"),
        ({"catalog": {"urls": {"openrouter": "ftp://x"}}}, "catalog.urls.openrouter"),
        ({"catalog": {"urls": {"other": "http://x"}}}, "catalog.urls.other"),
        ({"models": [{"name": "f", "free_pool": {"provider": "nope"}}]}, "models[0].free_pool.provider"),
        ({"models": [{"name": "f", "free_pool": {"provider": "or", "max_models": 0}}]},
         "models[0].free_pool.max_models"),
        ({"models": [{"name": "f", "free_pool": {"provider": "or"},
                      "targets": [{"provider": "or", "model": "m"}]}]}, "models[0].targets"),
    ]
    for extra, path in bad:
        with pytest.raises(ConfigError) as err:
            cfg(**extra)
        assert str(err.value).startswith(path), (path, str(err.value))
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": [{"name": "p", "type": "openai", "keys": ["k"], "catalog": "elsewhere"}]})
    assert str(err.value).startswith("providers[0].catalog")


# ----------------------------------------------------------------------------------------- CLI


def test_cli_catalog_import_and_free(tmp_path, capsys):
    from proxy.cli import main

    config = tmp_path / "k.yaml"
    config.write_text(json.dumps({"server": {"database": str(tmp_path / "k.db")}, "auth": {"mode": "open"},
                                  "providers": [{"name": "or", "type": "openai", "keys": ["sk-x"],
                                                 "base_url": "https://openrouter.ai/api/v1"}]}))
    doc = tmp_path / "openrouter.json"
    doc.write_text(json.dumps(fixture("openrouter")))
    assert main(["catalog", "import", str(doc), "--config", str(config)]) == 0
    assert "18 openrouter entries" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["catalog", "import", str(bad), "--config", str(config)]) == 2
    assert "nothing changed" in capsys.readouterr().err
    assert main(["catalog", "free", "--provider", "or", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "provider\tmodel\tcontext\tmax_output\tinput\tsource" and len(lines) == 7
    assert lines[1].split("\t")[:3] == ["openrouter", "deepseek/deepseek-v4-flash:free", "1048576"]
    assert not any("gpt-oss-20b\t" in line for line in lines)  # the paid twin is not free


def test_urls_are_stored_and_shown_without_credentials_or_query():
    from proxy.catalog.fetch import safe_url

    assert safe_url("https://user:secret@example.test:8443/api.json?key=s3cret") == \
        "https://example.test:8443/api.json"
    assert safe_url("http://[bad") == "<an unparsable URL>"


def test_fetch_failures_name_the_url_without_its_query(mock_catalog):
    from proxy.catalog.fetch import FetchError, fetch

    base = mock_catalog.urls["openrouter"].rsplit("/api/", 1)[0]
    with pytest.raises(FetchError, match=r"/nowhere answered HTTP 404$") as err:
        fetch(base + "/nowhere?token=s3cret")
    assert "s3cret" not in str(err.value)
    with pytest.raises(FetchError, match="ConnectionError"):
        fetch("http://127.0.0.1:9/api.json")
    got = fetch(mock_catalog.urls["openrouter"])
    assert not got.not_modified and got.etag and got.last_modified and len(got.doc["data"]) == 18
    again = fetch(mock_catalog.urls["openrouter"], got.etag, got.last_modified)
    assert again.not_modified and again.etag == got.etag
