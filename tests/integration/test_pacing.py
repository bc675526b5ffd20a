"""Issue 15: quota-aware pacing through a real 2-worker gunicorn against the mock Gemini enforcing quotas
(real-shaped 429s with QuotaFailure and RetryInfo), in real time with short loads: learning from the
first 429, projects, PerDay parking, the explainable refusal, configured limits, OpenAI headers."""
from __future__ import annotations

import math
import time

import pytest
import requests

from proxy.keys import key_id
from proxy.keys.cooldown import next_daily_reset
from proxy.keys.quota import MINUTE_S
from tests.harness import Server
from tests.mock_upstream import MockUpstream, QuotaLimiter

KEYS = ["pace-key-alpha-0001", "pace-key-bravo-0002", "pace-key-charlie-03"]
IDS = [key_id("gemini", k) for k in KEYS]
TOKEN = "pace-admin-token-0123"
TZ = "Pacific/Kiritimati"  # not the default: the reset follows key_manager.daily_reset_tz


def config(mock: MockUpstream, keys: list, *, limits: dict | None = None, ptype: str = "gemini") -> dict:
    base = mock.url + ("/v1beta" if ptype == "gemini" else "/v1")
    provider = {"name": "gemini", "type": ptype, "base_url": base, "keys": keys}
    if limits:
        provider["limits"] = limits
    return {
        "server": {"admin_token": TOKEN},
        "key_manager": {"daily_reset_tz": TZ},
        "retry": {"attempts": 4, "retry_after_cap_s": 0},
        "providers": [provider],
        "models": [{"name": "flash", "targets": [{"provider": "gemini", "model": "gemini-2.5-flash"}]},
                   {"name": "pro", "targets": [{"provider": "gemini", "model": "gemini-2.5-pro"}]}],
    }


@pytest.fixture
def mock():
    with MockUpstream() as m:
        yield m


def chat(gw: Server, model: str = "flash") -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", timeout=20,
                         json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def keys(gw: Server) -> dict[str, dict]:
    time.sleep(0.6)  # counts of scopes with no known limit yet are batched by each worker (0.25 s)
    r = requests.get(gw.url + "/admin/api/keys", timeout=10, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200
    return {k["id"]: k for k in r.json()["keys"]}


def refused_per_key(limiter: QuotaLimiter) -> list[int]:
    return [sum(1 for r in limiter.refused if r["key"] == k) for k in KEYS]


def test_the_first_429_per_key_teaches_its_rpm_and_no_other_429_follows(tmp_path, mock):
    mock.quota = limiter = QuotaLimiter(rpm=5)
    cfg = config(mock, [{"key": KEYS[0], "weight": 4}, KEYS[1], KEYS[2]])
    with Server(tmp_path, cfg) as gw:
        statuses = [chat(gw).status_code for _ in range(14)]  # under the pool's 15 a minute
        assert statuses == [200] * 14
        per_key = refused_per_key(limiter)
        assert max(per_key) == 1 and sum(per_key) >= 1, per_key
        view = keys(gw)
        for kid, n in zip(IDS, per_key, strict=True):
            rpm = view[kid]["limits"].get("gemini-2.5-flash", {}).get("rpm")
            if n:
                assert rpm["limit"] == 5 and rpm["source"] == "gemini_429" and rpm["learned_at"] > 0
                # what keyrelay sent in the minute: the 5 served and the one refused
                assert rpm["used"] == 6 and rpm["resets_at"] > time.time()
        served = sum(1 for c in mock.calls if c["status"] == 200)
        assert served == 14 and all(n <= 5 for n in (mock.count(key=k) - r for k, r in zip(KEYS, per_key,
                                                                                            strict=True)))


def test_keys_of_one_project_count_together(tmp_path, mock):
    mock.quota = limiter = QuotaLimiter(rpm=3, projects={KEYS[0]: "proj", KEYS[1]: "proj"})
    cfg = config(mock, [{"key": KEYS[0], "project": "proj", "weight": 5}, {"key": KEYS[1], "project": "proj",
                                                                            "weight": 5}, KEYS[2]])
    with Server(tmp_path, cfg) as gw:
        statuses = [chat(gw).status_code for _ in range(5)]  # 3 for the project, 2 for the solo key
        assert statuses == [200] * 5
        assert sum(refused_per_key(limiter)[:2]) == 1  # the project's one 429; then both keys know
        view = keys(gw)
        a, b = (view[k]["limits"]["gemini-2.5-flash"]["rpm"] for k in IDS[:2])
        assert a["limit"] == b["limit"] == 3 and a["used"] == b["used"] == 4  # 3 served, 1 refused
        assert mock.count(key=KEYS[0]) + mock.count(key=KEYS[1]) - 1 == 3  # 3 served by the project
        assert chat(gw).status_code == 200  # the solo key serves the rest; the project is paced
        assert sum(refused_per_key(limiter)[:2]) == 1 and refused_per_key(limiter)[2] == 0
        assert mock.count(key=KEYS[2]) == 3


def test_a_per_day_429_parks_the_key_for_that_model_until_midnight(tmp_path, mock):
    mock.quota = limiter = QuotaLimiter(rpd=2, models={"gemini-2.5-pro"}, day_retry_delay="29s")
    with Server(tmp_path, config(mock, [KEYS[0]])) as gw:
        assert [chat(gw, "pro").status_code for _ in range(2)] == [200, 200]
        r = chat(gw, "pro")  # the upstream's PerDay 429 with a 29 s retryDelay
        midnight = next_daily_reset(time.time(), TZ)
        assert r.status_code == 429 and len(limiter.refused) == 1
        assert abs(int(r.headers["Retry-After"]) - (midnight - time.time())) <= 2
        left = keys(gw)[IDS[0]]["cooldowns"]["gemini-2.5-pro"]
        assert abs(left - (midnight - time.time())) <= 2
        assert keys(gw)[IDS[0]]["limits"]["gemini-2.5-pro"]["rpd"]["limit"] == 2
        r = chat(gw, "pro")  # refused by keyrelay: nothing more reaches the upstream
        assert r.status_code == 429 and len(limiter.refused) == 1 and mock.count(model="gemini-2.5-pro") == 3
        assert chat(gw, "flash").status_code == 200  # another model on the same key keeps working


def test_configured_limits_hold_from_the_first_request_and_the_refusal_explains(tmp_path, mock):
    mock.quota = limiter = QuotaLimiter(rpm=3)
    cfg = config(mock, KEYS[:2], limits={"gemini-2.5-*": {"rpm": 3}, "*": {"rpd": 1000}})
    with Server(tmp_path, cfg) as gw:
        started = time.time()
        assert [chat(gw).status_code for _ in range(6)] == [200] * 6
        r = chat(gw)
        assert limiter.refused == []  # no 429 ever reached the mock
        assert r.status_code == 429
        body = r.json()["error"]
        assert body["code"] == "all_keys_cooling" and body["type"] == "rate_limit_error"
        soonest = min(k["resets_at"] for k in body["details"]["keys"])
        assert abs(int(r.headers["Retry-After"]) - math.ceil(soonest - time.time())) <= 1
        assert started + MINUTE_S - 1 <= soonest <= time.time() + MINUTE_S
        assert sorted(k["key"] for k in body["details"]["keys"]) == [1, 2]
        for k in body["details"]["keys"]:
            assert k["model"] == "gemini-2.5-flash"
            assert k["limits"]["rpm"]["limit"] == 3 and k["limits"]["rpm"]["used"] == 3
        assert not any(s in r.text for s in KEYS) and "k_" not in r.text  # no secret, no key id
        view = keys(gw)[IDS[0]]["limits"]["gemini-2.5-flash"]
        assert view["rpm"]["source"] == "configured" and view["rpd"] == {
            "limit": 1000, "used": 3, "resets_at": view["rpd"]["resets_at"], "source": "configured",
            "learned_at": None}
        assert abs(view["rpd"]["resets_at"] - next_daily_reset(time.time(), TZ)) < 1
        metrics = requests.get(gw.url + "/metrics", timeout=10).text
        labels = f'key="{IDS[0]}",model="gemini-2.5-flash"'
        assert f'keyrelay_key_quota_limit{{{labels},window="rpm"}} 3.0' in metrics
        assert f'keyrelay_key_quota_used{{{labels},window="rpd"}} 3.0' in metrics


def test_openai_rate_limit_headers_are_learned(tmp_path, mock):
    mock.quota = limiter = QuotaLimiter(rpm=4)
    with Server(tmp_path, config(mock, KEYS[:1], ptype="openai")) as gw:
        assert chat(gw).status_code == 200
        rpm = keys(gw)[key_id("gemini", KEYS[0])]["limits"]["gemini-2.5-flash"]["rpm"]
        assert rpm["limit"] == 4 and rpm["source"] == "headers"
        assert [chat(gw).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert limiter.refused == []  # paced from the headers: the upstream never had to refuse
