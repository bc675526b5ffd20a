"""The transport's configuration: providers[].timeouts.keepalive_expiry, providers[].proxy,
providers[].tls.verify / ca_file (validated at load, errors naming the path), what the relay and the
probe pass to the adapters, and tls_verify: false on the admin key listing."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from proxy.config import ConfigError, TargetConfig, parse_config
from proxy.providers import http


def config(**provider):
    return parse_config({"server": {"admin_token": "admin-token-0123456789"},
                         "providers": [{"name": "g", "type": "openai", "keys": ["sk-test-0123456789"],
                                        **provider}]})


def test_defaults():
    p = config().providers[0]
    assert p.timeouts.keepalive_expiry == 15 and p.proxy is None
    assert p.tls.verify is True and p.tls.ca_file is None


def test_values(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    p = config(timeouts={"keepalive_expiry": 2.5}, proxy="http://u:pw@proxy.corp:3128",
               tls={"verify": False, "ca_file": str(ca)}).providers[0]
    assert p.timeouts.keepalive_expiry == 2.5 and p.proxy == "http://u:pw@proxy.corp:3128"
    assert p.tls.verify is False and p.tls.ca_file == str(ca)
    assert config(proxy="").providers[0].proxy == "" and config(proxy="none").providers[0].proxy == ""


def test_proxy_password_is_a_secret():
    assert "pw" in config(proxy="http://u:pw@proxy.corp:3128").secrets()


def test_verify_false_is_a_startup_notice():
    assert "provider g: TLS certificate verification is disabled (tls.verify: false)" in \
        config(tls={"verify": False}).notices


@pytest.mark.parametrize("provider,message", [
    ({"tls": {"ca_file": "/nonexistent/ca.pem"}}, r"^providers\[0\]\.tls\.ca_file: cannot read /nonexist"),
    ({"tls": {"verify": "maybe"}}, r"^providers\[0\]\.tls\.verify: expected true or false"),
    ({"tls": {"verfy": False}}, r"^providers\[0\]\.tls\.verfy: unknown option"),
    ({"timeouts": {"keepalive_expiry": -1}}, r"^providers\[0\]\.timeouts\.keepalive_expiry: must be >= 0"),
    ({"proxy": "socks5://p:1080"}, r"^providers\[0\]\.proxy: expected http://"),
    ({"proxy": "http://u:hunter2@p:notaport"}, r"^providers\[0\]\.proxy: expected http://"),
    ({"proxy": 3128}, r"^providers\[0\]\.proxy: expected a proxy URL"),
])
def test_errors_name_the_path(provider, message):
    with pytest.raises(ConfigError, match=message) as err:
        config(**provider)
    assert "hunter2" not in str(err.value)


def test_ca_file_must_hold_a_certificate(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ConfigError, match=r"^providers\[0\]\.tls\.ca_file: .* holds no PEM certificate"):
        config(tls={"ca_file": str(bad)})


def test_relay_call_carries_the_deadline_and_the_providers_transport(monkeypatch):
    from proxy.relay import Relay, Trace

    cfg = config(proxy="", timeouts={"connect": 1, "first_byte": 2, "idle": 3, "keepalive_expiry": 4})
    relay = Relay(cfg, pool=None)
    provider = cfg.providers[0]
    deadline = time.monotonic() + 7
    call = relay._call(provider, TargetConfig("g", "m"), SimpleNamespace(secret="sk"), deadline, Trace())
    t = call.timeouts
    assert (t.connect, t.first_byte, t.idle, t.deadline) == (1, 2, 3, deadline)
    assert call.transport is http.transport_for(provider)
    assert call.transport.keepalive_expiry == 4 and call.transport.http_proxy is None
    again = relay._call(provider, TargetConfig("g", "m"), SimpleNamespace(secret="sk"), deadline, Trace())
    assert again.transport is call.transport  # built once per provider


def test_admin_key_listing_shows_tls_verify_false(make_app):
    client = make_app({"server": {"admin_token": "admin-token-0123456789"}, "providers": [
        {"name": "g", "type": "openai", "base_url": "https://127.0.0.1:9/v1", "keys": ["sk-test-0123456789"],
         "tls": {"verify": False}},
        {"name": "other", "type": "openai", "base_url": "https://127.0.0.1:9/v1",
         "keys": ["sk-test-9876543210"]}]})
    resp = client.get("/admin/api/keys", headers={"Authorization": "Bearer admin-token-0123456789"})
    keys = {k["provider"]: k for k in resp.get_json()["keys"]}
    assert keys["g"]["tls_verify"] is False and "tls_verify" not in keys["other"]
