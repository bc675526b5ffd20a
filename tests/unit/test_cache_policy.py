"""Cache settings per model and per request (proxy/cache/policy.py, the ``cache`` config)."""
from __future__ import annotations

import pytest

from proxy.cache import policy
from proxy.config import CacheConfig, ConfigError, parse_config
from proxy.errors import BadRequest


def config(cache: dict | None = None, **model_cache: dict):
    models = [{"name": name, "targets": [{"provider": "mock", "model": "m"}],
               **({"cache": c} if c is not None else {})} for name, c in
              {"gpt-a": None, "gpt-b": None, "other": None, **model_cache}.items()]
    data = {"providers": [{"name": "mock", "type": "mock"}], "models": models}
    if cache is not None:
        data["cache"] = cache
    return parse_config(data)


def test_defaults_are_the_issue_s():
    assert CacheConfig() == CacheConfig(enabled=False, ttl_s=3600, max_entries=10000, max_bytes=268435456,
                                        scope="client", models=(), deterministic_only=False)
    cfg = config()
    assert not policy.any_cache(cfg) and policy.settings_for(cfg, "gpt-a") is None


def test_globs_choose_the_models():
    cfg = config({"enabled": True, "models": ["gpt-*"]})
    assert policy.settings_for(cfg, "gpt-a") is cfg.cache
    assert policy.settings_for(cfg, "other") is None
    assert policy.settings_for(cfg, "mock/x") is None  # pass-through names too
    everything = config({"enabled": True})
    assert policy.settings_for(everything, "mock/x") is everything.cache


def test_a_model_overrides_the_global_settings():
    cfg = config({"enabled": True, "models": ["gpt-*"], "ttl_s": 60},
                 **{"gpt-b": {"enabled": False}, "other": {"enabled": True, "scope": "shared", "ttl_s": 5},
                    "gpt-c": {"deterministic_only": True}})
    assert policy.settings_for(cfg, "gpt-b") is None
    other = policy.settings_for(cfg, "other")
    assert other is not None and (other.scope, other.ttl_s, other.max_entries) == ("shared", 5, 10000)
    c = policy.settings_for(cfg, "gpt-c")  # inherits enabled through the globs
    assert c is not None and c.deterministic_only and c.ttl_s == 60
    off = config(None, **{"other": {"enabled": True}})  # only one model cached
    assert policy.any_cache(off) and policy.settings_for(off, "other") is not None
    assert policy.settings_for(off, "gpt-a") is None


@pytest.mark.parametrize("cache,model_cache,path", [
    ({"scope": "team"}, None, "cache.scope"),
    ({"ttl_s": 0}, None, "cache.ttl_s"),
    ({"max_entries": 0}, None, "cache.max_entries"),
    ({"models": "gpt-*"}, None, "cache.models"),
    ({"enabled": "maybe"}, None, "cache.enabled"),
    ({"surprise": 1}, None, "cache.surprise"),
    ({}, {"max_entries": 5}, "models[2].cache.max_entries"),
    ({}, {"models": ["x"]}, "models[2].cache.models"),
    ({}, {"scope": "x"}, "models[2].cache.scope"),
])
def test_config_errors_name_the_field(cache, model_cache, path):
    with pytest.raises(ConfigError) as err:
        config(cache, **({"other": model_cache} if model_cache is not None else {}))
    assert str(err.value).startswith(path + ":")


def test_request_directives():
    on = CacheConfig(enabled=True, ttl_s=100)
    body = {"model": "m"}
    assert policy.plan(on, body, None, None) == policy.Plan("MISS", on, 100)
    assert policy.plan(on, body, "no-store", None).status == "BYPASS"
    assert policy.plan(on, body, "No-Cache", None) == policy.Plan("REFRESH", on, 100)
    assert policy.plan(on, body, "no-cache, no-store", None).status == "BYPASS"  # no-store wins
    assert policy.plan(on, body, "max-age=0", None).status == "MISS"
    assert policy.plan(None, body, None, None).status == "BYPASS"
    p = policy.plan(on, body, None, "30")
    assert p.ttl_s == 30 and p.lookup and p.store
    assert policy.plan(on, body, None, "1000").ttl_s == 100  # capped by the config
    zero = policy.plan(on, body, None, "0")
    assert zero.lookup and not zero.store
    assert not policy.plan(on, body, "no-cache", None).lookup


@pytest.mark.parametrize("value", ["-1", "1.5", "abc", "", "１２", "9" * 13])
def test_a_bad_ttl_header_is_a_400(value):
    with pytest.raises(BadRequest) as err:
        policy.plan(CacheConfig(enabled=True), {}, None, value)
    assert err.value.status == 400 and err.value.param == "x-keyrelay-cache-ttl"


def test_deterministic_only():
    det = CacheConfig(enabled=True, deterministic_only=True)
    assert policy.plan(det, {"temperature": 0}, None, None).status == "MISS"
    assert policy.plan(det, {"temperature": 0.0}, None, None).status == "MISS"
    assert policy.plan(det, {"seed": 3, "temperature": 1}, None, None).status == "MISS"
    assert policy.plan(det, {}, None, None).status == "BYPASS"  # omitted is not 0
    assert policy.plan(det, {"temperature": 0.2}, None, None).status == "BYPASS"
    assert policy.plan(det, {"temperature": False}, None, None).status == "BYPASS"
