"""Issue 5: /metrics from 2 gunicorn workers (multiprocess mode) scraped under load: counters never go
backwards, totals equal what was sent, retries/failovers/tokens are counted, key gauges match the admin API
and both workers report the same key state."""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from proxy import __version__
from proxy.keys.ids import key_id
from tests.harness import Server
from tests.mock_upstream import error

TOKEN = "metrics-admin-token-777"
KA, KB = "AIzaMETRICS-key-a-000111", "AIzaMETRICS-key-b-000222"

FLASH = "gemini-2.5-flash"
N_REQUESTS, N_THREADS = 300, 8

Samples = dict[tuple[str, frozenset], float]


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    config = {
        "server": {"admin_token": TOKEN},
        "retry": {"attempts": 4, "backoff_base_s": 0.01, "retry_after_cap_s": 1},
        "providers": [
            {"name": "gem", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": [KA, KB],
             "timeouts": {"connect": 2, "first_byte": 5, "idle": 5}},
            {"name": "mock", "type": "mock"},
        ],
        "models": [
            {"name": "fast", "targets": [{"provider": "gem", "model": FLASH},
                                         {"provider": "mock", "model": "mock-1"}]},
            {"name": "mock-chat", "targets": [{"provider": "mock", "model": "mock-1"}]},
        ],
    }
    with Server(tmp_path_factory.mktemp("metrics"), config) as gateway:
        yield gateway


def scrape(gw: Server) -> tuple[int, str, Samples]:
    r = requests.get(gw.url + "/metrics", headers={"Connection": "close"}, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return int(r.headers["X-Keyrelay-Worker"]), r.text, samples


def scrapes(gw: Server, n: int = 24) -> list[tuple[int, str, Samples]]:
    """n concurrent scrapes on fresh connections, so both workers answer some."""
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: scrape(gw), range(n)))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def counters(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items()
            if k[0].startswith("keyrelay_") and k[0].endswith(("_total", "_count", "_sum", "_bucket"))}


def key_gauges(samples: Samples) -> Samples:
    return {k: v for k, v in samples.items() if k[0].startswith("keyrelay_key_") and "key_id" in dict(k[1])}


def chat(gw: Server, model: str, text: str) -> requests.Response:
    r = requests.post(gw.url + "/v1/chat/completions", timeout=15,
                      json={"model": model, "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r


def test_metrics_under_load(gw, mock):
    usage: dict[str, list[int]] = {}

    def account(r: requests.Response) -> None:
        u = r.json()["usage"]
        tokens = usage.setdefault(r.headers["X-Keyrelay-Route"], [0, 0, 0])
        tokens[0] += u["prompt_tokens"]
        tokens[1] += u["completion_tokens"]
        tokens[2] += 1

    # one transient failure: the next key of the same target answers (a retry)
    mock.script(behaviour=error(503), times=1)
    account(chat(gw, "fast", "retry me"))
    # both gem keys run out of quota for 30 s (> retry_after_cap_s): failover to the mock target
    mock.script(behaviour=error(429, retry_delay="30s"), times=2)
    r = chat(gw, "fast", "fail over")
    assert r.headers["X-Keyrelay-Route"] == "mock/mock-1"
    account(r)

    taken: list[tuple[float, float, int, Samples]] = []  # (sent, answered, worker, samples)
    stop = threading.Event()

    def scraper() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            pid, _, samples = scrape(gw)
            taken.append((sent, time.monotonic(), pid, samples))

    threads = [threading.Thread(target=scraper) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        with ThreadPoolExecutor(N_THREADS) as pool:
            for r in pool.map(lambda i: chat(gw, "mock-chat", f"load {i} " + "word " * (i % 7)),
                              range(N_REQUESTS)):
                account(r)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    # counters never go backwards: any scrape sent after another was answered, whichever worker served it
    assert len(taken) >= 10 and {pid for _, _, pid, _ in taken} == set(gw.worker_pids())
    for _, answered, _, earlier in taken:
        for sent, _, _, later in taken:
            if sent > answered:
                for key, v in counters(earlier).items():
                    assert later.get(key, 0.0) >= v, (key, v, later.get(key))

    time.sleep(0.5)  # key counters flush every 0.25 s
    _, text, final = scrape(gw)
    for secret in (KA, KB, TOKEN):
        assert secret not in text
    sent = N_REQUESTS + 2

    # HTTP: by endpoint/method/status (histogram count) and by method/status
    assert value(final, "keyrelay_http_request_duration_seconds_count",
                 method="POST", endpoint="/v1/chat/completions", status="200") == sent
    assert value(final, "keyrelay_http_request_total", method="POST", status="200") == sent  # deprecated
    assert value(final, "keyrelay_http_requests_total", method="POST", endpoint="/v1/chat/completions",
                 status="200") == sent

    # upstream attempts, latency and time to first byte
    assert value(final, "keyrelay_upstream_requests_total", provider="mock", model="mock-1",
                 outcome="ok") == N_REQUESTS + 1
    assert value(final, "keyrelay_upstream_requests_total", provider="gem", model=FLASH, outcome="ok") == 1
    assert value(final, "keyrelay_upstream_requests_total", provider="gem", model=FLASH,
                 outcome="transient") == 1
    assert value(final, "keyrelay_upstream_requests_total", provider="gem", model=FLASH, outcome="quota") == 2
    for name in ("keyrelay_upstream_latency_seconds_count", "keyrelay_upstream_ttfb_seconds_count"):
        assert value(final, name, provider="mock", model="mock-1") == N_REQUESTS + 1
    assert value(final, "keyrelay_upstream_latency_seconds_count", provider="gem", model=FLASH) == 4
    assert value(final, "keyrelay_upstream_latency_seconds_bucket", provider="mock", model="mock-1",
                 le="+Inf") == N_REQUESTS + 1

    # per key: the gem attempts split over its two keys, by outcome, and the mock's keyless one
    per_key = {(dict(labels)["key"], dict(labels)["outcome"]): v for (name, labels), v in final.items()
               if name == "keyrelay_key_requests_total" and dict(labels)["provider"] == "gem"}
    assert sum(per_key.values()) == 4 and {k for k, _ in per_key} <= {key_id("gem", KA), key_id("gem", KB)}
    assert sum(v for (_, outcome), v in per_key.items() if outcome == "quota") == 2
    assert value(final, "keyrelay_build_info", version=__version__) == 1
    assert value(final, "keyrelay_key_info", key_id=key_id("gem", KA), provider="gem", label="") == 1

    # retries (next key) and failovers (next target)
    assert value(final, "keyrelay_upstream_retries_total", provider="gem", model=FLASH) >= 2
    assert value(final, "keyrelay_upstream_failovers_total", provider="mock", model="mock-1") == 1

    # tokens in/out by model equal what the responses reported
    for route, (tokens_in, tokens_out, _) in usage.items():
        provider, model = route.split("/", 1)
        labels = {"provider": provider, "model": model}
        assert value(final, "keyrelay_tokens_total", direction="in", **labels) == tokens_in
        assert value(final, "keyrelay_tokens_total", direction="out", **labels) == tokens_out
    assert usage["mock/mock-1"][2] == N_REQUESTS + 1 and usage[f"gem/{FLASH}"][2] == 1


def test_key_gauges_match_admin_and_agree_across_workers(gw):
    chat(gw, "mock-chat", "warm")
    time.sleep(0.5)
    keys = requests.get(gw.url + "/admin/api/keys", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=5).json()["keys"]
    by_worker: dict[int, Samples] = {}
    for pid, _, samples in scrapes(gw):
        by_worker.setdefault(pid, key_gauges(samples))
    assert set(by_worker) == set(gw.worker_pids())

    circuit = {"closed": 0.0, "half_open": 0.5, "open": 1.0}
    for samples in by_worker.values():
        assert len({dict(k[1])["key_id"] for k in samples}) == len(keys) == 3
        for key in keys:
            labels = {"key_id": key["id"], "provider": key["provider"]}
            assert value(samples, "keyrelay_key_enabled", **labels) == float(key["enabled"])
            assert value(samples, "keyrelay_key_usable", **labels) == float(key["usable"])
            assert value(samples, "keyrelay_key_invalid", **labels) == float(key["status"] == "invalid")
            assert value(samples, "keyrelay_key_circuit_state", **labels) == circuit[key["circuit"]]
            assert value(samples, "keyrelay_key_cooling_models", **labels) == len(key["cooldowns"])
            assert value(samples, "keyrelay_key_weight", **labels) == key["weight"]
            assert abs(value(samples, "keyrelay_key_health", **labels) - key["health"]) <= 0.002
    gem = [k for k in keys if k["provider"] == "gem"]
    assert all(FLASH in k["cooldowns"] for k in gem)  # the 429s of the load test, seen by both workers

    first, second = by_worker.values()
    assert first.keys() == second.keys()
    for k, v in first.items():
        tolerance = 0.002 if k[0] == "keyrelay_key_health" else 0.0
        assert abs(second[k] - v) <= tolerance, k

    # an admin change shows in every worker's gauges at the next scrape
    target = gem[0]
    requests.post(f"{gw.url}/admin/api/keys/{target['id']}/disable",
                  headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    seen = set()
    for pid, _, samples in scrapes(gw):
        assert value(samples, "keyrelay_key_enabled", key_id=target["id"], provider="gem") == 0.0
        seen.add(pid)
    assert seen == set(gw.worker_pids())


def test_unknown_paths_do_not_mint_labels(gw):
    assert requests.get(gw.url + "/no/such/path-a1b2c3", timeout=5).status_code == 404
    _, text, samples = scrape(gw)
    assert "a1b2c3" not in text
    assert value(samples, "keyrelay_http_request_duration_seconds_count",
                 method="GET", endpoint="unmatched", status="404") >= 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/test installs it)")
def test_promtool_check_metrics_is_clean(gw):
    chat(gw, "mock-chat", "for promtool")
    chat(gw, "fast", "for promtool")
    _, text, _ = scrape(gw)
    out = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr
