"""Pacing config (issue 15): providers[].limits, keys[].project, key_manager.pacing; errors name the path."""
from __future__ import annotations

import pytest

from proxy.app import key_settings, key_specs
from proxy.config import ConfigError, parse_config

SECRET = "AIzaSyQUOTA-config-secret-0001"


def config(provider: dict, key_manager: dict | None = None) -> dict:
    return {"providers": [{"name": "g", "type": "gemini", "keys": [{"key": SECRET, "project": "proj-a"}],
                           **provider}],
            "key_manager": key_manager or {},
            "models": [{"name": "flash", "targets": [{"provider": "g", "model": "gemini-2.5-flash"}]}]}


def test_limits_projects_and_the_switch_reach_the_key_manager():
    cfg = parse_config(config({"limits": {"gemini-2.5-flash": {"rpm": 10, "tpm": 250000, "rpd": 250},
                                          "*": {"rpd": "1000"}}}, {"pacing": False}))
    p = cfg.providers[0]
    assert p.limits == {"gemini-2.5-flash": {"rpm": 10, "tpm": 250000, "rpd": 250}, "*": {"rpd": 1000}}
    assert p.keys[0].project == "proj-a"
    s = key_settings(cfg)
    assert s.pacing is False and s.quota_limits == {"g": p.limits}
    assert key_specs(cfg)[0].project == "proj-a"


@pytest.mark.parametrize("limits, path", [
    ({"gemini-2.5-flash": {"rpm": 0}}, "providers[0].limits.gemini-2.5-flash.rpm: must be >= 1"),
    ({"gemini-2.5-flash": {"rpm": 2.5}}, "providers[0].limits.gemini-2.5-flash.rpm: expected an integer"),
    ({"gemini-2.5-flash": {"rph": 3}}, "providers[0].limits.gemini-2.5-flash.rph: unknown option"),
    ({"*": "lots"}, "providers[0].limits.*: expected a mapping"),
    (["rpm"], "providers[0].limits: expected a mapping"),
])
def test_bad_limits_name_the_field(limits, path):
    with pytest.raises(ConfigError) as e:
        parse_config(config({"limits": limits}))
    assert str(e.value).startswith(path)
    assert SECRET not in str(e.value)


def test_bad_project_and_switch():
    bad = config({})
    bad["providers"][0]["keys"][0]["project"] = ""
    with pytest.raises(ConfigError, match=r"^providers\[0\]\.keys\[0\]\.project: expected a non-empty"):
        parse_config(bad)
    with pytest.raises(ConfigError, match=r"^key_manager\.pacing: expected true or false"):
        parse_config(config({}, {"pacing": "sometimes"}))
