"""Issue 19, must-show 3: the /admin Keys tab in headless Chromium with keys in every state, a key's
history page, and add → test → disable → remove driven through the UI (a real 2-worker gunicorn, the
mock Gemini over real sockets).

Screenshots go to ``$KEYRELAY_SCREENS`` (default ``tests/artifacts/screens``). The states are live (made
by scripted upstream answers); the 24 h of history behind the sparklines and charts before the test's own
traffic are seeded rows (``seed_history``: the live run is only seconds long).
"""
from __future__ import annotations

import os
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from proxy.keys import history, key_id
from proxy.keys.vault import generate_key
from proxy.store import db
from proxy.store.sqlite import SQLiteStore
from tests.browser import MARKS, chromium
from tests.harness import REPO, Server
from tests.mock_upstream import MockUpstream, error, invalid_key

pytestmark = MARKS

TOKEN = "dash-keys-admin-token-1919"
FLASH, PRO = "gemini-2.5-flash", "gemini-2.5-pro"
KEYS = {  # label -> secret
    "primary": "AIzaDASH-primary-key-0001",
    "burst": "AIzaDASH-burst-key-00002",
    "flaky": "AIzaDASH-flaky-key-00003",
    "old": "AIzaDASH-old-key-0000004",
    "spare": "AIzaDASH-spare-key-00005",
}
IDS = {label: key_id("gemini", secret) for label, secret in KEYS.items()}
RUNTIME_SECRET = "AIzaDASH-runtime-added-0009"
SCREENS = Path(os.environ.get("KEYRELAY_SCREENS", REPO / "tests" / "artifacts" / "screens"))


def seed_history(path: Path, now: float) -> None:
    """24 h of plausible minute and hour rows per key (deterministic), and a few past cooldowns."""
    conn = db.connect(path)
    db.migrate(conn)
    conn.close()
    rnd = random.Random(19)
    buf = history.HistoryBuffer()
    start = int(now // 60 * 60) - 24 * 3600
    for label, kid in IDS.items():
        base = {"primary": 6, "burst": 4, "flaky": 3, "old": 2, "spare": 3}[label]
        for minute in range(0, 24 * 60 - 5, 3):
            at = start + minute * 60
            busy = 1 + (minute // 60 in range(8, 19))  # more traffic in the day
            for _ in range(rnd.randint(0, base * busy)):
                outcome = "ok"
                r = rnd.random()
                if label == "burst" and 600 < minute < 700 and r < 0.5:
                    outcome = "quota"
                elif label == "flaky" and r < 0.12:
                    outcome = "transient"
                lat = rnd.lognormvariate(5.6 if label != "flaky" else 6.3, 0.35)
                buf.add(at, kid, "gemini", FLASH if r < 0.7 else PRO, outcome, latency_ms=lat,
                        status=429 if outcome == "quota" else 503 if outcome == "transient" else 200,
                        tokens=rnd.randint(40, 900) if outcome == "ok" else 0)
    for offset, length in ((14 * 3600, 1800), (13.2 * 3600, 600), (5 * 3600, 900)):
        buf.period(IDS["burst"], "cooldown", FLASH, now - offset, now - offset + length)
    buf.period(IDS["flaky"], "circuit_open", "", now - 9 * 3600, now - 9 * 3600 + 300)
    store = SQLiteStore(path)
    try:
        with store.transaction() as tx:
            tx.add_history(*buf.take())
    finally:
        store.close()


@pytest.fixture(scope="module")
def mock():
    with MockUpstream(latency=0.02) as m:
        yield m


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock):
    tmp = tmp_path_factory.mktemp("dashboard-keys")
    seed_history(tmp / "keyrelay.db", time.time())
    config = {
        "server": {"admin_token": TOKEN, "database": str(tmp / "keyrelay.db")},
        "key_manager": {"default_cooldown_s": 60, "breaker_failures": 2, "breaker_open_s": 900,
                        "revalidate_interval_s": 3600, "max_cooldown_s": 86400},
        "retry": {"attempts": 5, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "retry_after_cap_s": 0},
        "providers": [{"name": "gemini", "type": "gemini", "base_url": mock.url + "/v1beta",
                       "keys": [{"key": s, "label": label} for label, s in KEYS.items()]}],
        "models": [{"name": "flash", "targets": [{"provider": "gemini", "model": FLASH}]},
                   {"name": "pro", "targets": [{"provider": "gemini", "model": PRO}]}],
    }
    mock.script(key=KEYS["burst"], model=FLASH, behaviour=error(429, retry_delay="2400s"))
    mock.script(key=KEYS["flaky"], behaviour=error(503))
    mock.script(key=KEYS["old"], behaviour=invalid_key())
    with Server(tmp, config, env={"KEYRELAY_SECRET_KEY": generate_key()}) as gateway:
        admin(gateway, "POST", f"/keys/{IDS['spare']}/disable", json={"reason": "billing review"})
        sessions = [requests.Session() for _ in range(4)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: sessions[i % 4].post(
                gateway.url + "/v1/chat/completions", timeout=20,
                json={"model": "flash" if i % 3 else "pro", "messages": [{"role": "user", "content": "hi"}]}),
                range(40)))
        yield gateway


def admin(gw: Server, method: str, path: str, **kw) -> requests.Response:
    return requests.request(method, gw.url + "/admin/api" + path, timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}"}, **kw)


def states(gw: Server) -> dict[str, str]:
    return {k["id"]: k["state"] for k in admin(gw, "GET", "/keys").json()["keys"]}


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def open_page(browser, gw: Server, width: int, errors: list[str], hash_: str = ""):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("dialog", lambda d: d.accept())
    page.goto(gw.url + "/admin" + hash_)
    page.fill("#token", TOKEN)
    page.click("#save")
    return page


def test_every_state_is_shown_truthfully_at_1280_and_800(gw, browser):
    want = {IDS["primary"]: "usable", IDS["burst"]: "cooling", IDS["flaky"]: "circuit_open",
            IDS["old"]: "invalid", IDS["spare"]: "disabled"}
    assert states(gw) == want
    SCREENS.mkdir(parents=True, exist_ok=True)
    for width in (1280, 800):
        errors: list[str] = []
        page = open_page(browser, gw, width, errors)
        page.wait_for_selector("#keys tbody tr >> nth=4")
        page.wait_for_selector("#keys svg.spark")  # the sparklines arrived
        for kid, state in want.items():
            row = page.locator(f"#keys tbody tr[data-key-id='{kid}']")
            assert row.get_attribute("data-state") == state
        cooling = page.locator(f"#keys tbody tr[data-key-id='{IDS['burst']}'] td.state").inner_text()
        assert re.search(r"until \d\d:\d\d \(in (39|40) min\) for gemini-2\.5-flash", cooling), cooling
        assert "usable for other models" in cooling
        disabled = page.locator(f"#keys tbody tr[data-key-id='{IDS['spare']}'] td.state").inner_text()
        assert "by admin@127.0.0.1 at" in disabled and "billing review" in disabled
        opened = page.locator(f"#keys tbody tr[data-key-id='{IDS['flaky']}'] td.state").inner_text()
        assert re.search(r"until \d\d:\d\d \(in 1[45] min\)", opened), opened
        err = page.locator(f"#keys tbody tr[data-key-id='{IDS['old']}'] td.err").inner_text()
        assert re.search(r"at \d\d:\d\d \((just now|\d+ s ago)\)", err), err
        body = page.inner_text("body")
        assert not re.search(r"\d+\.\d+ s\b", body)  # no raw seconds such as "37794.8 s"
        summary = page.inner_text("#summary")
        assert "gemini · gemini-2.5-flash: 1 of 5 usable" in summary, summary  # primary only
        assert "gemini · gemini-2.5-pro: 2 of 5 usable" in summary, summary  # burst serves pro
        # the layout: nothing wraps letter by letter (the last-error cell stays wider than 10 characters)
        width_px = page.locator(f"#keys tbody tr[data-key-id='{IDS['old']}'] td.err").bounding_box()["width"]
        assert width_px > 150, width_px
        page.screenshot(path=str(SCREENS / f"dashboard-keys-{width}.png"), full_page=True)
        # filtering and sorting
        page.select_option("#k-state", "cooling")
        assert page.locator("#keys tbody tr").count() == 1
        page.select_option("#k-state", "")
        page.fill("#k-filter", "flaky")
        assert page.locator("#keys tbody tr").count() == 1
        page.fill("#k-filter", "")
        page.click("#keys th[data-sort='name']")
        labels = page.locator("#keys tbody td.key .label").all_inner_texts()
        assert labels == sorted(labels)
        if width == 800:  # the other tabs at the narrowest width too
            for tab in ("clients", "audit", "ops"):
                page.click(f"#tab-{tab}")  # routed on hashchange: wait for the panel, do not race it
                page.wait_for_selector(f"#panel-{tab}", state="visible", timeout=5000)
                assert page.locator("#panel-keys").is_hidden()
                page.wait_for_timeout(300)
                page.screenshot(path=str(SCREENS / f"tab-{tab}-800.png"), full_page=True)
        page.context.close()
        assert errors == []


def test_a_keys_history_page(gw, browser):
    errors: list[str] = []
    page = open_page(browser, gw, 1280, errors, f"#key/{IDS['burst']}")
    page.wait_for_selector("#kp-requests svg rect")
    page.wait_for_selector("#kp-periods svg rect[data-kind='cooldown']")
    assert "burst" in page.inner_text("#kp-title")
    assert "cooling for gemini-2.5-flash until" in page.inner_text("#kp-state")
    totals = page.inner_text("#kp-totals")
    assert "× HTTP 429" in totals and "latency p50" in totals
    assert page.locator("#kp-period-table tbody tr").count() >= 4  # 3 seeded + the live one
    page.screenshot(path=str(SCREENS / "key-history-1280.png"), full_page=True)
    page.set_viewport_size({"width": 800, "height": 900})
    page.screenshot(path=str(SCREENS / "key-history-800.png"), full_page=True)
    page.select_option("#kp-window", "1h|1m")
    page.wait_for_selector("#kp-status:has-text('buckets of 1m')")
    page.context.close()
    assert errors == []


def test_add_test_disable_remove_through_the_ui(gw, browser, tmp_path):
    errors: list[str] = []
    page = open_page(browser, gw, 1280, errors)
    page.wait_for_selector("#keys tbody tr >> nth=4")
    page.click("#add-keys summary")
    page.select_option("#ak-provider", "gemini")
    page.fill("#ak-key", RUNTIME_SECRET)
    page.fill("#ak-label", "added-in-ui")
    page.click("#ak-add")
    added = page.wait_for_selector("#messages .msg:has-text('added k_')")
    kid = re.search(r"k_[0-9a-f]{10}", added.inner_text()).group(0)
    assert kid == key_id("gemini", RUNTIME_SECRET)
    assert page.input_value("#ak-key") == ""  # the secret left the page
    row = page.locator(f"#keys tbody tr[data-key-id='{kid}']")
    row.wait_for()
    assert row.get_attribute("data-state") == "usable"
    assert "added-in-ui" in row.locator("td.key").inner_text()

    row.locator("button[data-action='test']").click()
    page.wait_for_selector("#messages .msg:has-text('test added-in-ui: ok in')")
    page.wait_for_timeout(2500)  # a refresh later, the messages are still there
    assert page.locator("#messages .msg:has-text('added k_')").count() == 1

    page.fill("#reason", "done testing")
    row.locator("button[data-action='disable']").click()
    page.wait_for_selector(f"#keys tbody tr[data-key-id='{kid}'][data-state='disabled']")
    assert "by admin@127.0.0.1" in row.locator("td.state").inner_text()
    assert "done testing" in row.locator("td.state").inner_text()
    assert admin(gw, "GET", f"/keys/{kid}").json()["key"]["enabled"] is False

    row.locator("details.more summary").click()
    row.locator("button[data-action='remove']").click()  # the confirm() dialog is accepted
    page.wait_for_selector("#messages .msg:has-text('remove added-in-ui: removed')")
    page.wait_for_selector(f"#keys tbody tr[data-key-id='{kid}']", state="detached")
    assert kid not in states(gw)
    # a config key offers no Remove (its 409 explains why, when asked through the API)
    cfg_row = page.locator(f"#keys tbody tr[data-key-id='{IDS['primary']}']")
    assert cfg_row.locator("button[data-action='remove']").count() == 0
    assert admin(gw, "DELETE", f"/keys/{IDS['primary']}").status_code == 409

    page.locator("#messages .msg >> nth=0").locator("button.dismiss").click()
    assert page.locator("#messages .msg").count() == 3  # the others stay until dismissed
    page.screenshot(path=str(SCREENS / "dashboard-after-remove-1280.png"), full_page=True)

    # the audit log view has the whole story of that key
    page.click("#tab-audit")
    page.fill("#au-filter", kid)
    page.wait_for_selector("#audit tbody tr td.action:has-text('remove')")
    actions = page.locator("#audit tbody td.action").all_inner_texts()
    assert {"add", "test", "disable", "remove"} <= set(actions), actions
    page.screenshot(path=str(SCREENS / "audit-1280.png"), full_page=True)
    # snapshot export from the operations tab
    page.click("#tab-ops")
    page.click("#snap-export")
    page.wait_for_selector("#messages .msg:has-text('export snapshot:')")
    # and back: a snapshot file imported (after the confirm() dialog), then a reload (last: workers restart)
    snap = tmp_path / "snapshot.json"
    snap.write_text(admin(gw, "GET", "/snapshot").text)
    page.set_input_files("#snap-file", str(snap))
    page.click("#snap-import")
    page.wait_for_selector("#messages .msg:has-text('key(s) imported')")
    page.click("#reload")
    page.wait_for_selector("#messages .msg:has-text('workers reloading')")
    html = page.content()
    for secret in (*KEYS.values(), RUNTIME_SECRET, TOKEN):
        assert secret not in html
    page.context.close()
    assert errors == []
