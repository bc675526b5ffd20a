"""Issue 16: transforms compiled at config load (errors name their path) and applied as plain functions."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from proxy import transforms as tf
from proxy.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]


def provider(transforms: dict, **extra: object) -> dict:
    return {"providers": [{"name": "m", "type": "mock", "transforms": transforms, **extra}]}


def compiled(transforms: dict) -> tf.Transforms:
    t = parse_config(provider(transforms)).providers[0].transforms
    assert t is not None
    return t


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize("bad, field", [
    ({"regex": "(unclosed", "replace": "x", "path": "$.a"}, "regex"),
    ({"regex": "ok", "replace": "x", "path": "$.[[nope"}, "path"),
    ({"set": "$.a[?(@.x ==", "value": 1}, "set"),
    ({"drop": "no-dollar"}, "drop"),
])
def test_a_bad_jsonpath_or_regex_names_its_rule(bad, field):
    with pytest.raises(ConfigError) as exc:
        parse_config(provider({"request": [{"drop": "$.logprobs"}, bad]}))
    assert str(exc.value).startswith(f"providers[0].transforms.request[1].{field}: ")


@pytest.mark.parametrize("bad, message", [
    ({"set": "$.a"}, "providers[0].transforms.request[0].value: required"),
    ({"set": "$.a", "drop": "$.b", "value": 1}, "providers[0].transforms.request[0]: expected exactly one"),
    ({"frobnicate": "$.a"}, "providers[0].transforms.request[0]: expected exactly one"),
    ({"drop": "$.a", "extra": 1}, "providers[0].transforms.request[0].extra: unknown option"),
])
def test_malformed_rules_name_their_field(bad, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(provider({"request": [bad]}))
    assert str(exc.value).startswith(message)


def test_header_settings_are_checked():
    with pytest.raises(ConfigError, match=r"providers\[0\]\.transforms\.headers\.mode: must be one of"):
        compiled({"headers": {"mode": "everything"}})
    with pytest.raises(ConfigError, match=r"providers\[0\]\.transforms\.headers\.force: 'authorization'"):
        compiled({"headers": {"force": {"Authorization": "Bearer x"}}})
    with pytest.raises(ConfigError, match=r"headers\.drop: 'x-goog-api-key'"):
        compiled({"headers": {"drop": ["x-goog-api-key"]}})


def test_model_transforms_and_inspector_redact_are_checked():
    cfg = {**provider({}), "models": [{"name": "a", "targets": [{"provider": "m", "model": "x"}],
                                       "transforms": {"response": [{"regex": "[", "replace": ""}]}}]}
    with pytest.raises(ConfigError, match=r"^models\[0\]\.transforms\.response\[0\]\.regex: "):
        parse_config(cfg)
    with pytest.raises(ConfigError, match=r"^inspector\.redact\[1\]: invalid JSONPath"):
        parse_config({**provider({}), "inspector": {"redact": ["$.ok", "$.[[bad"]}})
    with pytest.raises(ConfigError, match=r"^inspector\.sample: must be between 0 and 1"):
        parse_config({**provider({}), "inspector": {"sample": 1.5}})


def test_check_config_exits_2_naming_the_rule(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent("""\
        providers:
          - name: g
            type: gemini
            keys: [gem-check-config-key-1]
            transforms:
              request:
                - {drop: "$.logprobs"}
                - {regex: "(?i)secret-(\\\\w+", replace: "[removed]", path: "$.contents[*].parts[*].text"}
        """))
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(path)], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r.stderr
    assert "providers[0].transforms.request[1]" in r.stderr
    assert "gem-check-config-key-1" not in r.stderr
    path.write_text(path.read_text().replace("secret-(\\\\w+", "secret-\\\\w+"))
    ok = subprocess.run([sys.executable, "-m", "proxy.cli", "check-config", str(path)], cwd=REPO,
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr


# ---------------------------------------------------------------------------------------------- bodies

SAFETY = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
ISSUE_RULES = {"request": [
    {"set": "$.generationConfig.maxOutputTokens", "value": 1024},
    {"add": "$.safetySettings", "value": SAFETY},
    {"drop": "$.logprobs"},
    {"regex": "(?i)secret-\\w+", "replace": "[removed]", "path": "$.contents[*].parts[*].text"},
]}


def test_each_request_rule_on_a_gemini_body():
    rules = compiled(ISSUE_RULES).request
    assert rules is not None
    body = {"contents": [{"role": "user", "parts": [{"text": "a SECRET-abc b"}, {"text": "secret-x"}]}],
            "generationConfig": {"temperature": 0.5, "maxOutputTokens": 9}, "logprobs": True}
    out = tf.apply_rules(rules, body)
    parts = [{"text": "a [removed] b"}, {"text": "[removed]"}]
    assert out == {"contents": [{"role": "user", "parts": parts}],
                   "generationConfig": {"temperature": 0.5, "maxOutputTokens": 1024},
                   "safetySettings": SAFETY}
    assert body["logprobs"] is True and body["generationConfig"]["maxOutputTokens"] == 9  # never in place


def test_add_keeps_what_is_there_and_set_creates_missing_objects():
    rules = compiled(ISSUE_RULES).request
    assert rules is not None
    mine = [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"}]
    out = tf.apply_rules(rules, {"contents": [], "safetySettings": mine})
    assert out["safetySettings"] == mine
    assert out["generationConfig"] == {"maxOutputTokens": 1024}


def test_each_request_rule_on_an_openai_body():
    rules = compiled({"request": [
        {"set": "$.max_tokens", "value": 64}, {"add": "$.user", "value": "keyrelay"},
        {"drop": "$.logprobs"},
        {"regex": "secret-\\w+", "replace": "[removed]", "path": "$.messages[*].content"},
    ]}).request
    assert rules is not None
    out = tf.apply_rules(rules, {"model": "m", "max_tokens": 4000, "logprobs": True,
                                 "messages": [{"role": "user", "content": "my secret-123 here"}]})
    assert out == {"model": "m", "max_tokens": 64, "user": "keyrelay",
                   "messages": [{"role": "user", "content": "my [removed] here"}]}


def test_a_regex_without_path_edits_every_string():
    rules = compiled({"response": [{"regex": "foo", "replace": "bar"}]}).response
    assert rules is not None
    out = tf.apply_rules(rules, {"a": "foo", "b": [{"c": "xfoo"}], "n": 1})
    assert out == {"a": "bar", "b": [{"c": "xbar"}], "n": 1}


def test_a_rule_failing_at_run_time_is_skipped_and_logged(caplog):
    rules = compiled({"request": [{"set": "$.a.b", "value": 1}, {"drop": "$.x"}]}).request
    assert rules is not None
    body = {"a": "not an object", "x": 1}
    with caplog.at_level("WARNING", logger="keyrelay"):
        out = tf.apply_rules(rules, body, request_id="req-42")
    assert out == {"a": "not an object"}  # the failing rule changed nothing, the next one applied
    rec = next(r for r in caplog.records if getattr(r, "event", None) == "transform_error")
    assert rec.request_id == "req-42" and rec.rule == "providers[0].transforms.request[0]"


def test_model_sections_win_over_the_provider():
    p = compiled({"request": [{"drop": "$.a"}], "response": [{"drop": "$.b"}]})
    m = compiled({"request": [{"drop": "$.c"}]})
    merged = tf.merge(p, m)
    assert merged.request == m.request and merged.response == p.response
    assert tf.merge(None, None).empty


# ---------------------------------------------------------------------------------------------- headers

CLIENT = [("Authorization", "Bearer kr-client"), ("X-Api-Key", "kr-client"), ("Cookie", "s=1"),
          ("Host", "gw"), ("Content-Length", "10"), ("Content-Type", "application/json"),
          ("Accept-Encoding", "br"), ("X-Trace-Id", "t1"), ("X-Internal", "i"), ("User-Agent", "sdk/1")]
ADAPTER = {"x-goog-api-key": "upstream-key"}


@pytest.mark.parametrize("settings, expected", [
    ({"mode": "passthrough"}, {"x-trace-id": "t1", "x-internal": "i", "user-agent": "sdk/1"}),
    ({"mode": "whitelist", "allow": ["X-Trace-Id", "authorization"]}, {"x-trace-id": "t1"}),
    ({"mode": "blacklist", "deny": ["x-internal"]}, {"x-trace-id": "t1", "user-agent": "sdk/1"}),
    ({"mode": "passthrough", "force": {"x-trace-id": "forced"},
      "add": {"x-source": "keyrelay", "x-internal": "no"}, "drop": ["user-agent"]},
     {"x-trace-id": "forced", "x-internal": "i", "x-source": "keyrelay"}),
])
def test_header_modes(settings, expected):
    rules = compiled({"headers": settings}).headers
    assert rules is not None
    out, omit = tf.upstream_headers(rules, ADAPTER, CLIENT)
    assert out == {**expected, "x-goog-api-key": "upstream-key"}
    assert omit == rules.drop
