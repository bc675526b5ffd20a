"""Issue 20: on PostgreSQL a gevent worker keeps serving while one of its queries waits on the server.

pg8000 speaks the wire protocol over Python sockets, which gevent's monkey patching makes cooperative:
a statement the server is slow to answer (``pg_sleep``, a lock wait) parks only its own greenlet.

1. One connection, in a monkey-patched process: ``SELECT pg_sleep(1)`` runs in one greenlet while a
   timer greenlet keeps ticking every 100 ms (a blocking driver would give it no tick at all).
2. A real gunicorn+gevent keyrelay (one worker, so everything shares its event loop) on a PostgreSQL
   database: the test holds the store's advisory write lock from its own connection, so an admin write
   inside the worker waits on the server (``pg_advisory_xact_lock`` under ``lock_timeout``) and then
   answers a clean 503; meanwhile /healthz and chat completions keep answering fast, and once the lock
   is released the same write succeeds.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import requests

from proxy.keys import key_id
from proxy.store.pg_conn import PgConnection, parse_url
from proxy.store.postgres import WRITE_LOCK
from tests.harness import REPO, Server, mock_config
from tests.integration.test_db_lock import chat, timed

TOKEN = "test-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOLD_S = 4.0  # longer than the store's 2 s lock wait, so the admin write gives up while locked
FAST_S = 0.3

TICKER = r"""
import json, sys, time
from gevent import monkey
monkey.patch_all()
import gevent
from proxy.store.pg_conn import PgConnection, parse_url

conn = PgConnection(parse_url(sys.argv[1]), timeout_s=10)
conn.execute("SELECT 1")  # connected and authenticated before the clock starts
ticks, span = [], {}

def ticker():
    while "end" not in span:
        ticks.append(time.monotonic())
        gevent.sleep(0.1)

def sleeper():
    span["start"] = time.monotonic()
    conn.execute("SELECT pg_sleep(1)")
    span["end"] = time.monotonic()

jobs = [gevent.spawn(sleeper), gevent.spawn(ticker)]
gevent.joinall(jobs, timeout=10)
conn.close()
inside = [t for t in ticks if span["start"] <= t <= span["end"]]
print(json.dumps({"ticks": len(inside), "sleep_s": span["end"] - span["start"],
                  "gaps": [b - a for a, b in zip(inside, inside[1:])]}))
"""


def test_pg_sleep_in_one_greenlet_leaves_the_others_running(pg_url):
    out = subprocess.run([sys.executable, "-c", TICKER, pg_url], cwd=REPO, capture_output=True, text=True,
                         timeout=60, check=True)
    result = json.loads(out.stdout)
    print(f"{result['ticks']} ticks of 100 ms during a {result['sleep_s']:.2f} s pg_sleep")
    assert 0.95 <= result["sleep_s"] < 3.0, result
    assert result["ticks"] >= 8, result
    assert max(result["gaps"]) < 0.3, result


class AdvisoryLock:
    """The store's write lock, held from the test's own connection (as another instance would)."""

    def __init__(self, url: str) -> None:
        self.conn = PgConnection(parse_url(url), timeout_s=10)
        self.conn.execute("BEGIN")
        self.conn.execute("SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK,))

    def release(self) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()




def lock_waiters(url: str) -> int:
    """Sessions of the gateway waiting for the advisory lock, as the server sees them."""
    conn = PgConnection(parse_url(url), timeout_s=10)
    try:
        row = conn.execute("SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                           ).fetchone()
        return int(row[0]) if row else 0
    finally:
        conn.close()


def test_a_query_waiting_on_the_server_never_freezes_the_worker(tmp_path, pg_url):
    kid = key_id("mock", None)
    with Server(tmp_path, mock_config(admin_token=TOKEN, database=pg_url), workers=1) as gw:
        session = requests.Session()
        assert chat(session, gw).status_code == 200
        assert session.get(gw.url + "/readyz", timeout=5).status_code == 200

        lock = AdvisoryLock(pg_url)
        locked_at = time.monotonic()
        write: dict = {}
        try:
            def admin_write() -> None:
                r, took = timed(lambda: requests.post(f"{gw.url}/admin/api/keys/{kid}/disable", headers=AUTH,
                                                      json={"reason": "during the lock"}, timeout=10))
                write.update(status=r.status_code, body=r.json(), took=took)

            writer = threading.Thread(target=admin_write)
            writer.start()
            deadline = time.monotonic() + 1.5
            while lock_waiters(pg_url) == 0:  # the worker's query is now waiting on the server
                assert time.monotonic() < deadline, "the admin write never waited for the lock"
                time.sleep(0.02)
            waiting_seen = writer.is_alive()
            latencies: list[tuple[str, int, float]] = []
            while writer.is_alive() and time.monotonic() - locked_at < HOLD_S - 0.5:
                for name, call in (("healthz", lambda: session.get(gw.url + "/healthz", timeout=5)),
                                   ("chat", lambda: chat(session, gw))):
                    r, took = timed(call)
                    if writer.is_alive():  # only what ran while the admin write was waiting counts
                        latencies.append((name, r.status_code, took))
            writer.join(10)
            still_locked = time.monotonic() - locked_at < HOLD_S
        finally:
            lock.release()

        assert waiting_seen
        assert write["status"] == 503, write
        assert write["body"]["error"]["code"] == "database_unavailable"
        assert 1.5 <= write["took"] < HOLD_S, write["took"]  # gave up at its deadline, while locked
        assert still_locked
        assert len(latencies) >= 10, latencies
        assert {status for _, status, _ in latencies} == {200}, latencies
        slowest = max(took for _, _, took in latencies)
        print(f"{len(latencies)} requests while the admin write waited on PostgreSQL, "
              f"slowest {slowest * 1000:.0f} ms")
        assert slowest < FAST_S, sorted(latencies, key=lambda x: -x[2])[:5]

        r = requests.post(f"{gw.url}/admin/api/keys/{kid}/disable", headers=AUTH,
                          json={"reason": "after the lock"}, timeout=5)
        assert r.status_code == 200 and r.json()["key"]["enabled"] is False, r.text
        audit = requests.get(gw.url + "/admin/api/audit", headers=AUTH, timeout=5).json()["audit"]
        disables = [e for e in audit if e["action"] == "disable"]
        assert [e["after"]["disabled_reason"] for e in disables] == ["after the lock"]  # 503: nothing changed
        r = requests.post(f"{gw.url}/admin/api/keys/{kid}/enable", headers=AUTH, timeout=5)
        assert r.status_code == 200, r.text
        assert chat(session, gw).status_code == 200
