"""UsageLog on both store backends: cost from prices (exact, glob, cached, unpriced), records and
rollups in one flush, retention with an injected clock,
the report's raw/rollup split and grouping, the admin report's CSV and errors."""
from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest

from proxy.clients.model import Client, Finished, Usage, new_key
from proxy.clients.usage import UsageLog
from proxy.config import parse_config

DAY = 86400.0
T0 = datetime(2026, 6, 10, 12, 0, tzinfo=UTC).timestamp()


def config(**extra: object):
    data = {"providers": [{"name": "mock", "type": "mock"}],
            "models": [{"name": "mock-chat", "targets": [{"provider": "mock", "model": "mock-1"}]}],
            "auth": {"mode": "open"},
            "prices": {"mock-1": {"input": 1.0, "output": 2.0, "cached_input": 0.5},
                       "gpt-*": {"input": 10.0, "output": 30.0},
                       "mock-chat": {"input": 99.0, "output": 99.0}}}
    data.update(extra)
    return parse_config(data)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


A = Client(id="c_a", name="alpha", team="red", budget_usd=1.0, budget_period="day")
B = Client(id="c_b", name="beta")


def done(at: float = T0, client: Client | None = A, model: str = "mock-chat", upstream: str | None = "mock-1",
         usage: Usage | None | str = "default", status: int = 200, provider: str | None = "mock",
         key_id: str | None = "k_1", stream: bool = False) -> Finished:
    return Finished(at=at, request_id="r", endpoint="/v1/chat/completions", client=client, model=model,
                    provider=provider, upstream_model=upstream, key_id=key_id, status=status, outcome="ok",
                    usage=Usage(100, 50) if isinstance(usage, str) else usage, latency_ms=12.5,
                    first_byte_ms=3.0, stream=stream)


@pytest.fixture
def log(any_store):
    clock = Clock(T0)
    ul = UsageLog(config(accounting={"timezone": "UTC", "retention_days": 3}), any_store, clock)
    yield ul
    ul.close()


def add(log: UsageLog, d: Finished) -> None:
    log.record(d, log.cost(d))


# --- cost -------------------------------------------------------------------------------------------


def test_cost_upstream_model_first_cached_at_its_price(log):
    # 100 prompt (40 cached) at $1/M and $0.5/M, 50 completion at $2/M
    expected = (60 * 1 + 40 * 0.5 + 50 * 2) / 1e6
    assert log.cost(done(usage=Usage(100, 50, cached=40))) == pytest.approx(expected)


def test_cost_falls_back_to_client_model_then_globs(log):
    assert log.cost(done(upstream="unknown-up")) == pytest.approx((100 * 99 + 50 * 99) / 1e6)
    assert log.cost(done(model="x", upstream="gpt-4o")) == pytest.approx((100 * 10 + 50 * 30) / 1e6)
    # an exact name of either candidate beats a glob of the first
    assert log.cost(done(model="mock-chat", upstream="gpt-4o")) == pytest.approx((100 * 99 + 50 * 99) / 1e6)
    # without cached_input, cached tokens cost the input price
    assert log.cost(done(model="x", upstream="gpt-4o", usage=Usage(100, 0, cached=100))) \
        == pytest.approx(100 * 10 / 1e6)


def test_unpriced_is_none_never_zero_but_no_tokens_cost_nothing(log):
    assert log.cost(done(model="free?", upstream="nope")) is None
    assert log.cost(done(model="free?", upstream="nope", usage=Usage(0, 0))) == 0.0
    assert log.cost(done(model="free?", upstream=None, usage=None, status=429)) == 0.0


# --- records, rollups, retention --------------------------------------------------------------------


def rows(backend, sql):
    return backend.sql(sql)


def test_records_and_rollups_written_in_one_flush(log, any_backend):
    for _ in range(3):
        add(log, done())
    add(log, done(client=B, model="other", upstream="nope", status=502, usage=Usage(7, 0)))
    assert rows(any_backend, "SELECT COUNT(*) FROM usage_records") == [(0,)]  # queued, not written
    assert log.flush()
    recs = rows(any_backend, "SELECT client_id, team, model, provider, upstream_model, key_id,"
                " status, prompt_tokens, completion_tokens, cost_usd, latency_ms, first_byte_ms, stream"
                " FROM usage_records ORDER BY id")
    assert len(recs) == 4
    assert recs[0] == ("c_a", "red", "mock-chat", "mock", "mock-1", "k_1", 200, 100, 50,
                       pytest.approx(200 / 1e6), 12.5, 3.0, 0)
    assert recs[3][9] is None  # unpriced
    daily = rows(any_backend, "SELECT day, client_id, model, requests, errors, prompt_tokens,"
                 " completion_tokens, cost_usd, unpriced_requests FROM usage_daily ORDER BY client_id")
    assert daily == [("2026-06-10", "c_a", "mock-chat", 3, 0, 300, 150, pytest.approx(600 / 1e6), 0),
                     ("2026-06-10", "c_b", "other", 1, 1, 7, 0, 0.0, 1)]
    add(log, done())
    log.flush()
    assert rows(any_backend, "SELECT requests FROM usage_daily WHERE client_id='c_a'") == [(4,)]


def test_day_follows_the_accounting_timezone(any_backend):
    store = any_backend.open()
    ul = UsageLog(config(accounting={"timezone": "America/New_York"}), store, Clock(T0))
    at = datetime(2026, 6, 10, 2, 0, tzinfo=UTC).timestamp()  # 22:00 on June 9 in New York
    add(ul, done(at=at))
    ul.flush()
    assert rows(any_backend, "SELECT day FROM usage_daily") == [("2026-06-09",)]
    ul.close()
    store.close()


def test_retention_purges_raw_rows_keeps_rollups_and_reports_span_both(log, any_backend):
    for day in range(6):  # one request per day, June 5 .. June 10
        add(log, done(at=T0 - day * DAY))
    log.flush()
    assert log.purge() == 2  # retention 3 days: rows before June 7 12:00 go (June 5, June 6)
    assert rows(any_backend, "SELECT COUNT(*) FROM usage_records") == [(4,)]
    assert rows(any_backend, "SELECT COUNT(*) FROM usage_daily") == [(6,)]
    # June 7 lost no row but days before June 8 come from rollups (the first whole day kept is June 8)
    assert log.iso(log.raw_since()) == "2026-06-08T00:00:00+00:00"
    report = log.report(T0 - 10 * DAY, T0 + 1, ("day",))
    assert [(r["day"], r["requests"], r["prompt_tokens"]) for r in report] == \
        [(f"2026-06-{d:02d}", 1, 100) for d in range(5, 11)]
    total = log.report(T0 - 10 * DAY, T0 + 1, ())
    assert total == [{"requests": 6, "errors": 0, "prompt_tokens": 600, "completion_tokens": 300,
                      "cached_tokens": 0, "reasoning_tokens": 0, "cost_usd": pytest.approx(6 * 200 / 1e6),
                      "unpriced_requests": 0}]
    with pytest.raises(ValueError, match="group_by=route"):
        log.report(T0 - 10 * DAY, T0 + 1, ("route",))
    assert len(log.report(T0 - DAY, T0 + 1, ("route", "key"))) == 1  # within retention: fine


def test_purge_runs_in_small_batches(log, any_backend, monkeypatch):
    import proxy.clients.usage as mod
    monkeypatch.setattr(mod, "PURGE_BATCH", 3)
    for i in range(10):
        add(log, done(at=T0 - 5 * DAY + i))
    log.flush()
    assert log.purge() == 10
    assert rows(any_backend, "SELECT COUNT(*) FROM usage_records") == [(0,)]


def test_locked_database_keeps_rows_for_the_next_flush_and_bounds_the_queue(any_backend):
    store = any_backend.open(lock_wait_s=0.05)
    ul = UsageLog(config(), store, Clock(T0), max_queue=5)
    for _ in range(3):
        add(ul, done())
    holder = any_backend.lock()
    assert ul.flush() is False
    assert ul.pending() == 3
    for _ in range(4):
        add(ul, done())
    assert ul.pending() == 5 and ul.dropped == 2
    holder.release()
    assert ul.flush() is True
    assert rows(any_backend, "SELECT COUNT(*) FROM usage_records") == [(5,)]
    ul.close()
    store.close()


# --- reports ------------------------------------------------------------------------------------------


def test_grouping_partial_and_full_unpriced(log):
    add(log, done())
    add(log, done(upstream="nope", model="mystery"))
    add(log, done(client=B, upstream="nope", model="mystery", status=500))
    add(log, done(client=B))
    rows_ = log.report(T0 - DAY, T0 + 1, ("client", "model"))
    by = {(r["client_id"], r["model"]): r for r in rows_}
    assert by[("c_a", "mystery")]["cost_usd"] is None and by[("c_a", "mystery")]["unpriced_requests"] == 1
    assert by[("c_a", "mock-chat")]["client_name"] == "alpha" and by[("c_a", "mock-chat")]["team"] == "red"
    assert by[("c_b", "mystery")]["errors"] == 1
    per_client = {r["client_id"]: r for r in log.report(T0 - DAY, T0 + 1, ("client",))}
    # partially priced: the priced part's cost, and how many requests are missing from it
    assert per_client["c_a"]["cost_usd"] == pytest.approx(200 / 1e6)
    assert per_client["c_a"]["unpriced_requests"] == 1
    assert [r["requests"] for r in log.report(T0 - DAY, T0 + 1, ("client",), client="beta")] == [2]
    assert [r["requests"] for r in log.report(T0 - DAY, T0 + 1, (), model="mystery")] == [2]
    route = log.report(T0 - DAY, T0 + 1, ("route",))
    assert route[0]["provider"] == "mock" and {r["upstream_model"] for r in route} == {"mock-1", "nope"}


def test_summary_for_v1_key_uses_the_budget_period(log):
    add(log, done(at=T0 - DAY))  # yesterday: outside today's budget period
    add(log, done())
    add(log, done())
    s = log.summary(A)
    assert s["period"] == {"kind": "day", "start": "2026-06-10T00:00:00+00:00",
                           "end": "2026-06-11T00:00:00+00:00"}
    assert s["requests"] == 2 and s["tokens"] == 300 and s["cost_usd"] == pytest.approx(400 / 1e6)
    assert s["remaining"] == {"budget_usd": pytest.approx(1.0 - 400 / 1e6), "tokens": None}
    assert log.summary(B)["period"]["kind"] == "month"


ADMIN = "adm-token-for-tests"


def test_admin_usage_report_json_csv_and_bad_parameters(make_app):
    key = new_key()
    app = make_app({"server": {"admin_token": ADMIN},
                    "providers": [{"name": "mock", "type": "mock"}],
                    "models": [{"name": "mock-chat", "targets": [{"provider": "mock", "model": "mock-1"}]}],
                    "clients": [{"name": "ci", "key": key}],
                    "prices": {"mock-1": {"input": 1.0, "output": 2.0}}})
    h = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        r = app.post("/v1/chat/completions", headers=h,
                     json={"model": "mock-chat", "messages": [{"role": "user", "content": "hi there"}]})
        assert r.status_code == 200
    adm = {"Authorization": f"Bearer {ADMIN}"}
    r = app.get("/admin/api/usage?group_by=client,model", headers=adm)
    assert r.status_code == 200, r.json
    [row] = r.json["rows"]
    assert row["client_name"] == "ci" and row["model"] == "mock-chat" and row["requests"] == 3
    assert row["prompt_tokens"] > 0 and row["cost_usd"] > 0
    r = app.get("/admin/api/usage?group_by=model&format=csv", headers=adm)
    assert r.status_code == 200 and r.mimetype == "text/csv"
    table = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert table[0]["model"] == "mock-chat" and table[0]["requests"] == "3"
    for query, param in (("from=yesterday", "from"), ("to=2026-13-01", "to"), ("group_by=user", "group_by"),
                         ("format=xml", "format"), ("from=2026-06-10&to=2026-06-01", "from")):
        r = app.get(f"/admin/api/usage?{query}", headers=adm)
        assert r.status_code == 400 and param in r.json["error"]["message"], (query, r.json)
    assert app.get("/admin/api/usage").status_code == 401
    # GET /v1/key: the spend, and 401 without a key
    r = app.get("/v1/key", headers=h)
    assert r.status_code == 200, r.json
    assert r.json["name"] == "ci" and r.json["usage"]["requests"] == 3
    assert r.json["usage"]["cost_usd"] == pytest.approx(row["cost_usd"])
    assert app.get("/v1/key").status_code == 401


def test_report_mixes_rollup_days_and_raw_edges_exactly(log):
    import random
    rnd = random.Random(7)
    ats = [T0 - 2.5 * DAY + rnd.random() * 2.4 * DAY for _ in range(300)]  # within the 3-day retention
    for i, at in enumerate(ats):
        add(log, done(at=at, usage=Usage(i % 7 + 1, i % 3), client=(A, B)[i % 2]))
    for start, end in ((T0 - 2.3 * DAY, T0 - 0.2 * DAY), (T0 - 2 * DAY - 1, T0 - DAY + 1),
                       (T0 - 0.4 * DAY, T0 - 0.1 * DAY), (T0 - 3 * DAY, T0 + DAY)):
        want = [i for i, at in enumerate(ats) if start <= at < end]
        got = log.report(start, end, ())
        assert (got[0]["requests"] if got else 0) == len(want)
        assert (got[0]["prompt_tokens"] if got else 0) == sum(i % 7 + 1 for i in want)
        per_day = log.report(start, end, ("day", "client"))
        assert sum(r["requests"] for r in per_day) == len(want)
        assert sum(r["completion_tokens"] for r in per_day) == sum(i % 3 for i in want)


def test_flusher_writes_within_its_interval_and_close_flushes(any_backend):
    import time as _time
    store = any_backend.open()
    ul = UsageLog(config(), store, flush_interval_s=0.05)
    ul.start()
    add(ul, done(at=_time.time()))  # (a June record would be purged at once: past the 90-day retention)
    deadline = _time.monotonic() + 2
    while rows(any_backend, "SELECT COUNT(*) FROM usage_records") != [(1,)]:
        assert _time.monotonic() < deadline, "the flusher did not write"
        _time.sleep(0.02)
    ul.flush_interval_s = 60.0  # the next round is far away: only close() can write this one
    _time.sleep(0.1)
    add(ul, done(at=_time.time()))
    ul.close()
    assert rows(any_backend, "SELECT COUNT(*) FROM usage_records") == [(2,)]
    store.close()


def test_parse_time_dates_are_local_days(any_backend):
    store = any_backend.open()
    ul = UsageLog(config(accounting={"timezone": "Europe/Berlin"}), store, Clock(T0))
    assert ul.iso(ul.parse_time("2026-06-10")) == "2026-06-10T00:00:00+02:00"
    assert ul.iso(ul.parse_time("2026-06-10", end=True)) == "2026-06-11T00:00:00+02:00"  # 'to' inclusive
    assert ul.parse_time("2026-06-10T12:00:00Z") == T0
    assert ul.iso(ul.parse_time("2026-06-10T12:00:00")) == "2026-06-10T12:00:00+02:00"
    for bad in ("yesterday", "2026-13-01", "12:00"):
        with pytest.raises(ValueError):
            ul.parse_time(bad)
    store.close()
