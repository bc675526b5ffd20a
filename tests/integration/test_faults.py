"""Issue 6: fault injection against a real keyrelay (gunicorn + gevent, SQLite) and a scriptable mock.

Each scenario starts its own keyrelay with the config it needs, injects one fault with the mock, measures
what the client saw and what keyrelay did, and fills its row of docs/resilience.md (resilience_report).
Every wait has an explicit cap, so a regression fails fast instead of hanging the suite.
"""
from __future__ import annotations

import json
import signal
import socket
import sqlite3
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from proxy.keys.ids import key_id
from tests.harness import Server, free_port
from tests.integration import resilience_report
from tests.mock_upstream import MockUpstream, delay, error, hold, invalid_key, pace, reset_after

pytestmark = pytest.mark.fault

FAST_RETRY = {"attempts": 4, "backoff_base_s": 0.02, "backoff_cap_s": 0.2, "retry_after_cap_s": 2,
              "deadline_s": 10}
CAP_S = 60  # per scenario


# ---------------------------------------------------------------------------------------------- helpers

@pytest.fixture(scope="module")
def mock():
    with MockUpstream(hold_timeout=20) as m:
        yield m


@pytest.fixture(autouse=True)
def _clean_mock(mock):
    mock.clear()
    yield
    mock.clear()


@pytest.fixture(autouse=True)
def _time_cap():
    """No scenario may run longer than this: a hang fails the test instead of the whole CI job."""
    def expired(signum, frame):  # noqa: ANN001
        raise TimeoutError(f"scenario exceeded its {CAP_S} s cap")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(CAP_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def report(request):
    """This scenario's row of docs/resilience.md (see resilience_report)."""
    def get(number: str) -> resilience_report.Row:
        return resilience_report.row(request.config, number)
    return get


DIAG_TOKEN = "faults-admin-token-0123"


def provider(name: str, keys: list[str], url: str, **extra: object) -> dict:
    return {"name": name, "type": "openai", "base_url": url + "/v1", "keys": keys, **extra}


def model(name: str, *targets: tuple[str, str], **extra: object) -> dict:
    return {"name": name, "targets": [{"provider": p, "model": m} for p, m in targets], **extra}


def config(providers: list[dict], models: list[dict], *, retry: dict | None = None,
           key_manager: dict | None = None, server: dict | None = None) -> dict:
    return {"server": {"log_level": "info", **(server or {})}, "retry": {**FAST_RETRY, **(retry or {})},
            "key_manager": key_manager or {}, "providers": providers, "models": models}


def chat(gw: Server, model_name: str, text: str = "hello", *, stream: bool = False, timeout: float = 10,
         session: requests.Session | None = None) -> requests.Response:
    body = {"model": model_name, "messages": [{"role": "user", "content": text}], "stream": stream}
    return (session or requests).post(gw.url + "/v1/chat/completions", json=body, stream=stream,
                                      timeout=timeout)


def sse_events(resp: requests.Response) -> list[tuple[float, str | None, str]]:
    """(seconds since the call, event name, data) for every SSE event, read as it arrives."""
    start = time.monotonic()
    out, event = [], None
    for line in resp.iter_lines(chunk_size=None):
        line = line.decode()
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((time.monotonic() - start, event, line[6:]))
            event = None
    return out


def stream_outcome(resp: requests.Response) -> tuple[str, list[dict], dict | None]:
    """(text, chunks, error object or None) of a finished OpenAI stream; asserts it ended with [DONE]."""
    events = sse_events(resp)
    assert events and events[-1][2] == "[DONE]", f"stream did not end cleanly: {events[-3:]}"
    chunks = [json.loads(d) for _, _, d in events[:-1]]
    errors = [c["error"] for c in chunks if "error" in c]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    return text, chunks, errors[0] if errors else None


def db_keys(gw: Server) -> dict[str, sqlite3.Row]:
    conn = sqlite3.connect(gw.config["server"]["database"], timeout=5)
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: r for r in conn.execute("SELECT * FROM keys")}
    finally:
        conn.close()


def wait_until(pred, timeout: float, interval: float = 0.02, what: str = "condition"):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout}s")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


# ---------------------------------------------------------------------------------------------- 1

def test_429_storm_on_two_of_three_keys(tmp_path, mock, report):
    row = report("1")
    keys = ["sk-storm-a", "sk-storm-b", "sk-storm-c"]
    cfg = config([provider("up", keys, mock.url)], [model("chat", ("up", "gpt-4o-mini"))])
    for k in keys[:2]:  # the storm: every call with these keys is rate limited, cooling 1 s each time
        mock.script(key=k, behaviour=error(429, headers={"Retry-After": "1"}))
    n, started = 500, time.monotonic()
    with Server(tmp_path, cfg) as gw:
        local = threading.local()

        def one(i: int) -> tuple[int, float, str | None]:
            s = local.__dict__.setdefault("s", requests.Session())
            t0 = time.monotonic()
            if i % 5 == 0:
                with chat(gw, "chat", f"storm {i}", stream=True, session=s) as r:
                    if r.status_code != 200:
                        return r.status_code, time.monotonic() - t0, r.text
                    _, _, err = stream_outcome(r)
                    return (599 if err else 200), time.monotonic() - t0, json.dumps(err) if err else None
            r = chat(gw, "chat", f"storm {i}", session=s)
            return r.status_code, time.monotonic() - t0, None if r.ok else r.text

        with ThreadPoolExecutor(25) as ex:
            results = list(ex.map(one, range(n)))
        elapsed = time.monotonic() - started
    failures = [(s, body) for s, _, body in results if s != 200]
    latencies = [t for _, t, _ in results]
    storm_429s = sum(1 for c in mock.calls if c["key"] in keys[:2] and c["status"] == 429)
    served = {k: sum(1 for c in mock.calls if c["key"] == k and c["status"] == 200) for k in keys}
    row.errors = f"{len(failures)} of {n} requests failed"
    row.did = [f"absorbed {storm_429s} upstream 429s (Retry-After: 1) on the 2 storming keys, each moving "
               f"the request to the next key at once",
               f"the healthy key answered {served[keys[2]]}/{n}; "
               f"latency p50 {pct(latencies, 50) * 1000:.0f} ms, "
               f"p99 {pct(latencies, 99) * 1000:.0f} ms (no backoff sleeps)"]
    row.seconds = elapsed
    assert not failures, failures[:3]
    assert storm_429s >= 2, "the storm never hit keyrelay"
    assert served[keys[2]] == n
    assert pct(latencies, 99) < 2.0, "a ready key was available: no request should have waited"
    row.verified = True


# ---------------------------------------------------------------------------------------------- 2

def test_5xx_burst_opens_circuit_then_half_open_recovers(tmp_path, mock, report):
    row = report("2")
    keys = ["sk-burst-a", "sk-burst-b", "sk-burst-c"]
    bad = key_id("up", keys[1])
    cfg = config([provider("up", keys, mock.url)], [model("chat", ("up", "gpt-4o-mini"))],
                 key_manager={"breaker_failures": 3, "breaker_open_s": 1})
    started = time.monotonic()
    with Server(tmp_path, cfg) as gw:
        states: list[tuple[float, str]] = []  # (time, circuit of the bad key) whenever it changed
        errors: list[str] = []
        stop = threading.Event()

        def traffic() -> None:
            s = requests.Session()
            while not stop.is_set():
                r = chat(gw, "chat", "burst", session=s)
                if r.status_code != 200:
                    errors.append(f"{r.status_code} {r.text[:200]}")
                time.sleep(0.01)

        def sample() -> None:
            while not stop.is_set():
                circuit = db_keys(gw)[bad]["circuit"]
                if not states or states[-1][1] != circuit:
                    states.append((time.time(), circuit))
                time.sleep(0.01)

        burst = mock.script(key=keys[1], behaviour=error(500))
        threads = [threading.Thread(target=traffic) for _ in range(3)] + [threading.Thread(target=sample)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: states and states[-1][1] == "open", 10, what="circuit open")
            opened_at = states[-1][0]
            time.sleep(0.5)  # the burst goes on for a while with the circuit open
            mock.rules.clear()  # burst over; the probe is slow enough to see half-open in the database
            del burst
            mock.script(key=keys[1], behaviour=delay(0.3), times=1)
            wait_until(lambda: [s for _, s in states].count("closed") >= 2, 10, what="circuit closed again")
            recovered_at = states[-1][0]
            time.sleep(1.0)  # traffic goes on after the recovery
        finally:
            stop.set()
            for t in threads:
                t.join(10)
    calls = mock.find(key=keys[1])
    failures = [c for c in calls if c["status"] == 500]
    last_fail = max(c["time"] for c in failures)
    after = [c for c in calls if c["time"] > last_fail]
    total = sum(1 for c in mock.calls if c["status"] == 200)
    sequence = [s for _, s in states]
    row.errors = f"{len(errors)} of {total + len(errors)} requests failed"
    row.did = [f"{len(failures)} upstream 500s on the bad key, each retried on another key at once",
               f"circuit {' → '.join(sequence)}: closed again {recovered_at - opened_at:.2f} s after "
               f"opening (breaker_open_s 1, then a 0.3 s probe); no call to the key while open",
               f"first call after the burst came {after[0]['time'] - last_fail:.2f} s after the last failure "
               f"(the half-open probe); then the key served {len(after)} requests again"]
    row.seconds = time.monotonic() - started
    assert not errors, errors[:3]
    assert sequence[:2] == ["closed", "open"] and "half_open" in sequence and sequence[-1] == "closed"
    assert after and after[0]["time"] - last_fail >= 0.9, "the key was called while its circuit was open"
    assert all(c["status"] == 200 for c in after) and len(after) >= 2
    row.verified = True


# ---------------------------------------------------------------------------------------------- 3

def test_slow_upstream_gets_a_timely_error_or_a_fallback(tmp_path, mock, report):
    row = report("3")
    fast_key, slow_key, silent_key = "sk-fast", "sk-slow", "sk-silent"
    timeouts = {"connect": 0.5, "first_byte": 0.4, "idle": 0.5}
    cfg = config(
        [provider("slow", [slow_key], mock.url, timeouts=timeouts),
         provider("fast", [fast_key], mock.url),
         provider("silent", [silent_key], mock.url, timeouts=timeouts)],
        [model("slow-only", ("slow", "m-slow")),
         model("slow-then-fast", ("slow", "m-slow"), ("fast", "m-fast")),
         model("goes-silent", ("silent", "m-silent"))],
        retry={"deadline_s": 1.5}, key_manager={"breaker_failures": 50})  # timeouts, not an open circuit
    mock.script(key=slow_key, behaviour=delay(5))
    mock.script(key=silent_key, behaviour=pace(chunks=6) + hold(5, after=2))
    started = time.monotonic()
    with Server(tmp_path, cfg) as gw:
        t0 = time.monotonic()
        r = chat(gw, "slow-only", timeout=10)
        t_error = time.monotonic() - t0
        slow_attempts = mock.count(key=slow_key)
        t0 = time.monotonic()
        rs = chat(gw, "slow-only", stream=True, timeout=10)
        rs.close()
        t_stream_error = time.monotonic() - t0
        t0 = time.monotonic()
        fb = chat(gw, "slow-then-fast", timeout=10)
        t_fallback = time.monotonic() - t0
        with chat(gw, "goes-silent", stream=True, timeout=10) as silent:
            events = sse_events(silent)
    parsed = [(t, json.loads(d)) for t, _, d in events if d != "[DONE]"]
    content = [(t, c) for t, c in parsed if c.get("choices") and c["choices"][0]["delta"].get("content")]
    err = [(t, c["error"]) for t, c in parsed if "error" in c]
    silence = err[0][0] - content[-1][0] if err and content else None
    row.errors = (f"non-stream: {r.status_code} {r.json()['error']['code']} after {t_error:.2f} s; "
                  f"stream: {rs.status_code} after {t_stream_error:.2f} s; with a fallback: none "
                  f"({t_fallback:.2f} s); silent mid-stream: error event {silence or 0:.2f} s after the last "
                  f"chunk, then [DONE]")
    row.did = [f"first-byte timeout 0.4 s per attempt, {slow_attempts} attempts on the slow key within "
               f"the 1.5 s request deadline, then 504",
               f"fallback model: answered by {fb.headers.get('X-Keyrelay-Route')} after the slow target "
               f"timed out",
               "idle timeout 0.5 s between chunks ended the silent stream with an error event"]
    row.seconds = time.monotonic() - started
    assert r.status_code == 504 and t_error < 2.0
    assert rs.status_code == 504 and t_stream_error < 2.0
    assert fb.status_code == 200 and fb.headers["X-Keyrelay-Route"] == "fast/m-fast" and t_fallback < 1.5
    assert fb.json()["model"] == "m-fast"
    assert len(content) == 2 and err and err[0][1]["code"] == "upstream_error"
    assert 0.4 <= silence < 1.5, silence
    assert events[-1][2] == "[DONE]"
    row.verified = True


# ---------------------------------------------------------------------------------------------- 4

def test_reset_mid_stream_gives_error_event_and_clean_end(tmp_path, mock, report):
    row = report("4")
    keys = ["sk-reset-a", "sk-reset-b"]
    cfg = config([provider("up", keys, mock.url), {"name": "claude", "type": "anthropic",
                                                    "base_url": mock.url + "/v1", "keys": ["sk-ant-reset"]}],
                 [model("chat", ("up", "gpt-4o-mini")), model("opus", ("claude", "claude-x"))])
    started = time.monotonic()
    with Server(tmp_path, cfg) as gw:
        before = db_keys(gw)
        mock.script(behaviour=pace(chunks=6, delay=0.05) + reset_after(3), times=1, dialect="openai")
        t0 = time.monotonic()
        with chat(gw, "chat", "please reset", stream=True) as r:
            text, chunks, err = stream_outcome(r)
        t_openai = time.monotonic() - t0
        broken = mock.calls[-1]["key"]

        mock.script(behaviour=pace(chunks=6, delay=0.05) + reset_after(3), times=1, dialect="anthropic")
        t0 = time.monotonic()
        with requests.post(gw.url + "/v1/messages", stream=True, timeout=10, json={
                "model": "opus", "max_tokens": 50, "stream": True,
                "messages": [{"role": "user", "content": "reset me"}]}) as ra:
            a_events = sse_events(ra)
        t_anthropic = time.monotonic() - t0
        time.sleep(0.5)  # the batched counters reach SQLite
        after = db_keys(gw)

        # before the first byte reached the client, a reset is retried on the other key transparently
        mock.script(behaviour=reset_after(0), times=1, dialect="openai")
        n = mock.count(dialect="openai")
        with chat(gw, "chat", "early reset", stream=True) as r2:
            text2, _, err2 = stream_outcome(r2)
        early_calls = mock.count(dialect="openai") - n
        early_keys = [c["key"] for c in mock.find(dialect="openai")[n:]]
    kid = key_id("up", broken)
    row.errors = (f"OpenAI: {sum(1 for c in chunks if c.get('choices'))} chunks then "
                  f"data: {{\"error\": {{\"code\": \"{err and err['code']}\"}}}} and [DONE] "
                  f"in {t_openai:.2f} s; "
                  f"Anthropic: event: {a_events[-1][1]} in {t_anthropic:.2f} s; "
                  f"reset before the first byte: {'no error' if not err2 else 'error'}")
    row.did = [f"scored the key: errors {before[kid]['errors']} → {after[kid]['errors']}, "
               f"last_error \"{after[kid]['last_error']}\"",
               f"a reset before any chunk reached the client was retried "
               f"{'on the other key' if len(set(early_keys)) > 1 else 'on a fresh connection'} "
               f"({early_calls} upstream calls, client saw a normal stream)"]
    row.seconds = time.monotonic() - started
    assert err is not None and err["type"] == "server_error"
    assert text.startswith("echo") and len([c for c in chunks if c.get("choices")]) == 4  # role + 3 pieces
    assert a_events[-1][1] == "error" and json.loads(a_events[-1][2])["type"] == "error"
    assert not any(e == "message_stop" for _, e, _ in a_events)
    assert t_openai < 3 and t_anthropic < 3
    assert after[kid]["errors"] == before[kid]["errors"] + 1 and after[kid]["last_error"]
    assert err2 is None and "early reset" in text2 and early_calls == 2
    row.verified = True


# ---------------------------------------------------------------------------------------------- 5

def test_all_keys_invalid_or_cooling(tmp_path, mock, report):
    row = report("5")
    bad = ["sk-bad-1", "sk-bad-2", "sk-bad-3"]
    cool = ["sk-cool-1", "sk-cool-2", "sk-cool-3"]
    cfg = config([provider("bad", bad, mock.url), provider("cool", cool, mock.url)],
                 [model("bad-chat", ("bad", "gpt-4o")), model("cool-chat", ("cool", "gpt-4o"))],
                 server={"admin_token": DIAG_TOKEN})
    for k in bad:
        mock.script(key=k, behaviour=invalid_key())
    for k, secs in zip(cool, (7, 12, 20), strict=True):
        mock.script(key=k, behaviour=error(429, headers={"Retry-After": str(secs)}))
    started = time.monotonic()
    with Server(tmp_path, cfg) as gw:
        first = chat(gw, "bad-chat")
        calls_after_first = mock.count()
        t0 = time.monotonic()
        second = chat(gw, "bad-chat")
        t_invalid = time.monotonic() - t0
        calls_invalid = mock.count() - calls_after_first

        c1 = chat(gw, "cool-chat")
        n = mock.count()
        t0 = time.monotonic()
        c2 = chat(gw, "cool-chat")
        t_cool = time.monotonic() - t0
        calls_cool = mock.count() - n
        auth = {"Authorization": f"Bearer {DIAG_TOKEN}"}
        url = gw.url + "/admin/api/diagnosis?model="
        diag = requests.get(url + "bad-chat", headers=auth, timeout=5).json()
        cool_diag = requests.get(url + "cool-chat", headers=auth, timeout=5).json()
    reasons = {k["id"]: k["reason"] for k in diag["targets"][0]["keys"]}
    row.errors = (f"all invalid: {first.status_code} on the first request, then {second.status_code} in "
                  f"{t_invalid * 1000:.0f} ms with per-key reasons {sorted(set(reasons.values()))}; "
                  f"all cooling: {c1.status_code} Retry-After {c1.headers.get('Retry-After')}, then "
                  f"{c2.status_code} Retry-After {c2.headers.get('Retry-After')} in {t_cool * 1000:.0f} ms")
    row.did = [f"tried each invalid key once ({calls_after_first} upstream calls), marked all 3 invalid; "
               f"later requests made {calls_invalid} upstream calls",
               f"cooled each key for its own Retry-After (7, 12, 20 s) and answered with the soonest; "
               f"{calls_cool} upstream calls while cooling"]
    row.seconds = time.monotonic() - started
    assert first.status_code == 503 and second.status_code == 503 and calls_invalid == 0
    assert t_invalid < 0.2
    assert reasons == {key_id("bad", k): "invalid" for k in bad}
    body = second.text + c2.text
    assert not any(k in body for k in bad + cool)
    assert c1.status_code == 429 and c2.status_code == 429 and calls_cool == 0 and t_cool < 0.2
    assert c1.headers["Retry-After"] == "7" and c2.headers["Retry-After"] in ("6", "7")
    assert c2.json()["error"]["code"] == "all_keys_cooling"
    assert second.json()["error"]["code"] == "no_usable_key"
    assert "cooling_down" in json.dumps(cool_diag) and "details" not in c2.json()["error"]
    row.verified = True


# ---------------------------------------------------------------------------------------------- 6

def test_primary_provider_down_fallback_answers(tmp_path, mock, report):
    row = report("6")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = config(
        [provider("primary", ["sk-primary"], dead, timeouts={"connect": 0.5}),
         provider("backup", ["sk-backup"], mock.url),
         provider("a", ["sk-w-a"], mock.url), provider("b", ["sk-w-b"], mock.url)],
        [model("chat", ("primary", "big-model"), ("backup", "small-model")),
         {"name": "weighted", "strategy": "weighted",
          "targets": [{"provider": "a", "model": "m-a", "weight": 3}, {"provider": "b", "model": "m-b"}]}])
    started = time.monotonic()
    with Server(tmp_path, cfg) as gw:
        t0 = time.monotonic()
        r = chat(gw, "chat")
        t_plain = time.monotonic() - t0
        with chat(gw, "chat", stream=True) as rs:
            route_stream = rs.headers.get("X-Keyrelay-Route")
            _, chunks, err = stream_outcome(rs)
        s = requests.Session()
        picks = [chat(gw, "weighted", f"w{i}", session=s).headers.get("X-Keyrelay-Route") for i in range(200)]
    share_a = picks.count("a/m-a") / len(picks)
    row.errors = (f"none: {r.status_code} in {t_plain * 1000:.0f} ms; "
                  f"stream {'with error' if err else 'clean'}")
    row.did = [f"connection refused on the primary → fallback answered; X-Keyrelay-Route "
               f"{r.headers.get('X-Keyrelay-Route')} (stream: {route_stream}), model \"{r.json()['model']}\"",
               f"weighted model (3:1): {share_a:.0%} of 200 requests went to the weight-3 target first"]
    row.seconds = time.monotonic() - started
    assert r.status_code == 200 and r.headers["X-Keyrelay-Route"] == "backup/small-model"
    assert r.json()["model"] == "small-model" and t_plain < 1.0
    assert route_stream == "backup/small-model" and err is None
    assert all(c["model"] == "small-model" for c in chunks)
    assert set(picks) == {"a/m-a", "b/m-b"} and 0.6 <= share_a <= 0.9
    row.verified = True


# ---------------------------------------------------------------------------------------------- 7

def _open_streams(gw: Server, n: int, model_name: str) -> tuple[list[threading.Thread], list]:
    results: list = [None] * n

    def run(i: int) -> None:
        try:
            with chat(gw, model_name, f"long stream {i}", stream=True, timeout=30) as r:
                results[i] = (r.status_code, *stream_outcome(r))
        except Exception as exc:  # noqa: BLE001 - recorded and asserted below
            results[i] = (None, "", [], repr(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return threads, results


def _models(gw: Server) -> set[str]:
    return {m["id"] for m in requests.get(gw.url + "/v1/models", timeout=5).json()["data"]}


def test_sighup_reload_keeps_streams_and_rejects_invalid_config(tmp_path, mock, report):
    row = report("7")
    key = "sk-hup"
    cfg = config([provider("up", [key], mock.url)], [model("chat", ("up", "gpt-4o-mini"))],
                 server={"graceful_timeout": 20})
    started = time.monotonic()
    with Server(tmp_path, cfg) as gw:
        old_pids = set(gw.worker_pids())
        mock.script(key=key, behaviour=pace(chunks=4) + hold("hup", after=1))
        threads, results = _open_streams(gw, 20, "chat")
        mock.wait_for_calls(20, timeout=10, key=key)
        time.sleep(0.2)  # every client has its first chunk

        changed = json.loads(json.dumps(cfg))
        changed["models"].append(model("after-reload", ("up", "gpt-4o")))
        gw.write_config(changed)
        t0 = time.monotonic()
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "after-reload" in _models(gw), 15, 0.1, "new config in force")
        t_reload = time.monotonic() - t0
        new_pids = set(gw.worker_pids()) - old_pids
        mock.release("hup")
        for t in threads:
            t.join(20)
        after = chat(gw, "after-reload")
        assert after.status_code == 200, (after.status_code, after.text[:300], gw.logs()[-3000:])
        answered = after.json()["model"]

        broken = json.loads(json.dumps(changed))
        broken["retry"]["attempts"] = 0
        broken["models"].append(model("must-not-appear", ("up", "gpt-4o")))
        gw.write_config(broken)
        pids_before_bad = set(gw.worker_pids())
        gw.signal(signal.SIGHUP)
        wait_until(lambda: "reload rejected" in gw.logs(), 10, 0.1, "invalid config rejected")
        wait_until(lambda: not (set(gw.worker_pids()) & pids_before_bad), 15, 0.1, "workers replaced")
        models_after_bad = _models(gw)
        still = chat(gw, "after-reload")
        rejection = next(line for line in gw.logs().splitlines() if "reload rejected" in line)
    ok = [r for r in results if r and r[0] == 200 and r[3] is None and "long stream" in r[1]]
    row.errors = f"{20 - len(ok)} of 20 open streams dropped or errored; requests after either reload: ok"
    row.did = [f"valid config: new workers {sorted(new_pids)} served the new model {t_reload:.1f} s after "
               f"SIGHUP while the old workers finished the 20 streams",
               f"invalid config: logged \"{rejection.split('keyrelay: ', 1)[-1][:90]}\"; the previous config "
               f"kept serving (models: {sorted(models_after_bad)})"]
    row.seconds = time.monotonic() - started
    assert len(ok) == 20, [r for r in results if r not in ok][:3]
    assert new_pids and answered == "gpt-4o"
    assert "retry.attempts" in rejection
    assert "after-reload" in models_after_bad and "must-not-appear" not in models_after_bad
    assert still.status_code == 200
    row.verified = True


def test_sigterm_finishes_streams_and_flushes_counters(tmp_path, mock, report):
    row = report("7b")
    key = "sk-term"
    cfg = config([provider("up", [key], mock.url)], [model("chat", ("up", "gpt-4o-mini"))],
                 server={"graceful_timeout": 10})
    started = time.monotonic()
    gw = Server(tmp_path, cfg).start()
    try:
        for i in range(5):
            assert chat(gw, "chat", f"warm {i}").status_code == 200
        mock.script(key=key, behaviour=pace(chunks=10, delay=0.15))
        threads, results = _open_streams(gw, 10, "chat")
        mock.wait_for_calls(15, timeout=10, key=key)
        t0 = time.monotonic()
        gw.signal(signal.SIGTERM)
        for t in threads:
            t.join(15)
        t_streams = time.monotonic() - t0
        code = gw.proc.wait(15)
        t_exit = time.monotonic() - t0
    finally:
        gw.stop()
    counted = db_keys(gw)[key_id("up", key)]["requests"]
    ok = [r for r in results if r and r[0] == 200 and r[3] is None and "long stream" in r[1]]
    row.errors = f"{10 - len(ok)} of 10 in-flight streams cut"
    row.did = [f"stopped accepting, finished the streams ({t_streams:.1f} s), exited with code {code} "
               f"{t_exit:.1f} s after SIGTERM (graceful_timeout 10 s)",
               f"SQLite counted {counted} of 15 requests after exit (batched counters flushed)"]
    row.seconds = time.monotonic() - started
    assert len(ok) == 10, [r for r in results if r not in ok][:3]
    assert code == 0 and t_exit < 10
    assert counted == 15
    row.verified = True


def test_client_disconnect_releases_upstream_connection(tmp_path, report):
    row = report("7c")
    with MockUpstream() as own:  # its own mock, so its open connections are only this stream's
        own.script(behaviour=pace(chunks=200, delay=0.05))
        cfg = config([provider("up", ["sk-gone"], own.url)], [model("chat", ("up", "gpt-4o-mini"))])
        started = time.monotonic()
        with Server(tmp_path, cfg) as gw:
            body = json.dumps({"model": "chat", "stream": True,
                               "messages": [{"role": "user", "content": " ".join(["word"] * 400)}]})
            sock = socket.create_connection(("127.0.0.1", gw.port), timeout=10)
            head = ("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
                    "Content-Type: application/json\r\n")
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n{body}".encode())
            seen = b""
            while seen.count(b"data: ") < 4:
                data = sock.recv(65536)
                assert data, f"keyrelay closed the stream early: {seen[-300:]!r}"
                seen += data
            upstream_open = len(own._server.open_conns)
            sock.close()
            t0 = time.monotonic()
            wait_until(lambda: not own._server.open_conns, 5, 0.01, "upstream connection closed")
            t_release = time.monotonic() - t0
            streamed = own.calls[-1]
            time.sleep(0.3)
            reqs = db_keys(gw)[key_id("up", "sk-gone")]
    row.errors = "n/a (the client left after 3 chunks)"
    row.did = [f"closed the upstream connection {t_release * 1000:.0f} ms after the client left "
               f"(the next chunk write failed; gunicorn noticed, the stream generator was closed)",
               f"the key was not blamed: errors {reqs['errors']}"]
    row.seconds = time.monotonic() - started
    assert upstream_open == 1 and streamed["stream"]
    assert t_release < 1.0
    assert reqs["errors"] == 0
    row.verified = True


def test_report_module_renders(tmp_path):
    rows = {"1": resilience_report.Row("1", "0 of 5", ["did x"], 1.0, True)}
    text = resilience_report.render(rows)
    assert "| 1 | 429 storm" in text and "did x" in text
    assert "| 8 | Streaming through a real nginx | not run" in text

