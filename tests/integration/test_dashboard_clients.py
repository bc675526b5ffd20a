"""Issue 13: the dashboard's Clients and Usage panels in headless Chromium against a real gunicorn keyrelay.

Create a client through the form (the key shown once, working, gone from the page after dismiss), revoke
and rotate through the UI (the API and the data plane agree), a config client is read-only, a hostile
team name renders as text; no console error and no CSP violation. The usage chart is checked twice: with
the usage report answered by the test (``page.route``: the drawing, deterministic whatever is merged) and
against the gateway's own ``/admin/api/usage``.
"""
from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from tests.browser import MARKS, chromium
from tests.harness import REPO, Server, mock_config

pytestmark = MARKS

TOKEN = "dashboard-clients-admin-token-13"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CONFIG_KEY = "kr-" + "D" * 43
KEY = re.compile(r"kr-[A-Za-z0-9_-]{43}")
XSS = "<img src=x onerror=alert(1)>"
DAYS = 14
ARTIFACTS = REPO / "tests" / "artifacts"
# records CSP violations and alert() calls before the page's own script runs
WATCH = """window.__csp = []; window.__alerts = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective));
window.alert = (m) => window.__alerts.push(String(m));"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    config = mock_config(admin_token=TOKEN)
    config["auth"] = {"mode": "keys"}
    config["clients"] = [{"name": "gitops-bot", "key": CONFIG_KEY, "models": ["mock-chat"], "rpm": 600}]
    with Server(tmp_path_factory.mktemp("dashboard-clients"), config) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


class Dashboard:
    """One fresh page on /admin with the console, page errors, CSP violations and usage calls recorded."""

    def __init__(self, browser, gw: Server) -> None:
        self.gw = gw
        self.context = browser.new_context(viewport={"width": 1500, "height": 900})
        self.context.add_init_script(WATCH)
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.errors: list[str] = []
        self.not_found: list[str] = []  # "Failed to load resource" lines (the 404 of a missing usage report)
        self.usage_calls: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)
        self.page.on("request", self._request)
        self.confirm = True

    def _console(self, msg) -> None:
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        if "Failed to load resource" in msg.text and "/admin/api/usage" in url:
            self.not_found.append(url)
        else:
            self.errors.append(f"console: {msg.text} ({url})")

    def _request(self, request) -> None:
        if "/admin/api/usage" in request.url:
            self.usage_calls.append(request.url)

    def _dialog(self, dialog) -> None:
        if dialog.type == "confirm" and self.confirm:
            dialog.accept()
        else:
            dialog.dismiss()

    def login(self) -> None:
        self.page.goto(self.gw.url + "/admin#clients")  # the Clients tab
        self.page.wait_for_selector("#clients-status:has-text('admin token')")
        self.page.fill("#token", TOKEN)
        self.page.click("#save")
        self.page.wait_for_selector("#clients-status:has-text('client(s)')")

    def row(self, cid: str):
        return self.page.locator(f"#clients tbody tr[data-client-id='{cid}']")

    def allow(self, status: int, path: str) -> None:
        """The browser's own line for one answer the test asked for (e.g. a 400 for a refused create)."""
        line = f"status of {status} "
        self.errors = [e for e in self.errors if not (line in e and e.endswith(f"{path})"))]

    def check_clean(self) -> None:
        assert self.errors == []
        assert self.page.evaluate("window.__csp") == []
        assert self.page.evaluate("window.__alerts") == []

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def dash(browser, gw):
    d = Dashboard(browser, gw)
    try:
        yield d
    finally:
        d.close()


def chat(gw: Server, key: str) -> requests.Response:
    body = {"model": "mock-chat", "messages": [{"role": "user", "content": "Hi"}]}
    return requests.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json=body, timeout=10)


def api_clients(gw: Server) -> dict[str, dict]:
    r = requests.get(gw.url + "/admin/api/clients", headers=ADMIN, timeout=5)
    assert r.status_code == 200, r.text
    return {c["id"]: c for c in r.json()["clients"]}


def api_create(gw: Server, **body) -> tuple[dict, str]:
    r = requests.post(gw.url + "/admin/api/clients", headers=ADMIN, json=body, timeout=5)
    assert r.status_code == 201, r.text
    return r.json()["client"], r.json()["key"]


def usage_report(gw: Server, **params) -> requests.Response:
    return requests.get(gw.url + "/admin/api/usage", headers=ADMIN, params=params, timeout=5)


def by_name(gw: Server, name: str) -> dict:
    return next(c for c in api_clients(gw).values() if c["name"] == name)


def key_shown(dash: Dashboard) -> str:
    dash.page.wait_for_selector("#newkey:not([hidden])")
    key = dash.page.inner_text("#newkey-value").strip()
    assert KEY.fullmatch(key), key
    return key


def dismiss(dash: Dashboard, key: str) -> None:
    dash.page.click("#newkey-dismiss")
    assert dash.page.locator("#newkey").is_hidden()
    assert key not in dash.page.content()
    stored = dash.page.evaluate("JSON.stringify([{...sessionStorage}, {...localStorage}])")
    assert key not in stored


def wait_for_series(page, n: int, timeout: float = 5) -> None:
    """Until the chart has n series (polled from Python: page.wait_for_function evaluates a string, which
    the page's CSP refuses)."""
    deadline = time.monotonic() + timeout
    while page.locator("#chart g.series").count() != n:
        assert time.monotonic() < deadline, f"the chart has {page.locator('#chart g.series').count()} series"
        time.sleep(0.1)


def last_days() -> list[str]:
    today = datetime.now(UTC).date()
    return [(today - timedelta(days=DAYS - 1 - i)).isoformat() for i in range(DAYS)]


# ---------------------------------------------------------------------------------------------- clients


def test_create_shows_the_key_once_and_it_works(dash, gw):
    dash.login()
    page = dash.page
    page.fill("#c-name", "ui-created")
    page.fill("#c-team", "research")
    page.fill("#c-models", "mock-chat, mock-*")
    page.fill("#c-rpm", "120")
    page.fill("#c-tpm", "50000")
    page.fill("#c-conc", "4")
    page.fill("#c-budget", "25")
    page.select_option("#c-period", "week")
    page.click("#c-create")
    key = key_shown(dash)
    assert page.locator("#newkey").get_attribute("role") == "alert"
    assert "shown only this once" in page.inner_text("#newkey")

    client = by_name(gw, "ui-created")
    assert (client["team"], client["models"], client["rpm"], client["tpm"], client["max_concurrent"],
            client["budget_usd"], client["budget_period"], client["source"]) == \
        ("research", ["mock-chat", "mock-*"], 120, 50000, 4, 25.0, "week", "runtime")
    assert client["key_hint"] == f"{key[:7]}…{key[-3:]}"
    assert chat(gw, key).status_code == 200
    assert page.evaluate("sessionStorage.getItem('keyrelay-admin-token')") == TOKEN

    row = dash.row(client["id"])
    row.wait_for()
    assert row.locator("td.team").inner_text() == "research"
    limits = row.locator("td.limits").inner_text()
    for part in ("rpm 120", "tpm 50k", "concurrent 4", "$25.00/week"):
        assert part in limits
    assert row.locator("button[data-action='revoke']").count() == 1
    assert row.locator("button[data-action='rotate']").count() == 1
    assert page.locator("#c-name").input_value() == ""  # the form was reset

    dismiss(dash, key)
    time.sleep(2.5)  # a poll later the key is still gone
    assert key not in page.content()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-clients.png"), full_page=True)
    assert TOKEN not in page.content()
    dash.check_clean()


def test_revoke_through_the_ui(dash, gw):
    client, key = api_create(gw, name="to-revoke")
    assert chat(gw, key).status_code == 200
    dash.login()
    row = dash.row(client["id"])
    row.wait_for()

    dash.confirm = False  # "Cancel" in the confirm dialog changes nothing
    row.locator("button[data-action='revoke']").click()
    time.sleep(0.3)
    assert api_clients(gw)[client["id"]]["revoked"] is False

    dash.confirm = True
    row.locator("button[data-action='revoke']").click()
    row.locator("td.state:has-text('revoked')").wait_for()
    assert row.locator("button").count() == 0
    assert api_clients(gw)[client["id"]]["revoked"] is True
    r = chat(gw, key)
    assert r.status_code == 401 and "revoked" in r.text
    dash.check_clean()


def test_rotate_through_the_ui(dash, gw):
    client, old = api_create(gw, name="to-rotate")
    assert chat(gw, old).status_code == 200
    dash.login()
    row = dash.row(client["id"])
    row.wait_for()
    dash.page.fill("#grace", "0")
    row.locator("button[data-action='rotate']").click()
    new = key_shown(dash)
    assert new != old
    assert "works 0 s more" in dash.page.inner_text("#newkey-title")
    assert chat(gw, old).status_code == 401
    assert chat(gw, new).status_code == 200
    assert api_clients(gw)[client["id"]]["key_hint"] != client["key_hint"]
    dismiss(dash, new)
    assert old not in dash.page.content()
    dash.check_clean()


def test_config_client_is_read_only(dash, gw):
    dash.login()
    client = by_name(gw, "gitops-bot")
    assert client["source"] == "config"
    row = dash.row(client["id"])
    row.wait_for()
    assert row.locator("td.actions").inner_text() == "from config"
    assert row.locator("button").count() == 0
    assert "rpm 600" in row.locator("td.limits").inner_text()
    assert chat(gw, CONFIG_KEY).status_code == 200
    assert CONFIG_KEY not in dash.page.content()
    dash.check_clean()


def test_hostile_values_render_as_text(dash, gw):
    dash.login()
    page = dash.page
    page.fill("#c-name", XSS)  # the API refuses such a name: the error is shown, as text
    page.click("#c-create")
    page.wait_for_selector("#clients-action:has-text('create failed')")
    assert "Invalid 'name'" in page.inner_text("#clients-action")
    dash.allow(400, "/admin/api/clients")

    page.fill("#c-name", "xss-team")
    page.fill("#c-team", XSS)
    page.click("#c-create")
    key = key_shown(dash)
    dismiss(dash, key)
    client = by_name(gw, "xss-team")
    assert client["team"] == XSS
    row = dash.row(client["id"])
    row.wait_for()
    assert row.locator("td.team").inner_text() == XSS
    assert page.locator("#clients img, #usage-table img, #legend img").count() == 0
    page.wait_for_timeout(300)
    dash.check_clean()


# ---------------------------------------------------------------------------------------------- usage


def fake_report(route, request, rows_for) -> None:
    q = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
    route.fulfill(status=200, content_type="application/json", body=json.dumps({"rows": rows_for(q)}))


def test_usage_chart_draws_the_report(dash, gw):
    """The drawing, with the usage report answered by the test: one series per client, DAYS points each,
    values from the rows, the metric selector, the table, and spend this month with unpriced parts."""
    alpha, _ = api_create(gw, name="chart-alpha")
    beta, _ = api_create(gw, name="chart-beta")
    days = last_days()
    row = {"errors": 0, "cached_tokens": 0}
    daily = {
        alpha["id"]: [{**row, "day": days[-1], "requests": 7, "prompt_tokens": 70, "completion_tokens": 30,
                       "cost_usd": 0.5, "unpriced_requests": 0},
                      {**row, "day": days[-3], "requests": 2, "prompt_tokens": 10, "completion_tokens": 5,
                       "cost_usd": 0.25, "unpriced_requests": 1}],
        beta["id"]: [{**row, "day": days[0], "requests": 4, "prompt_tokens": 40, "completion_tokens": 40,
                      "cost_usd": None, "unpriced_requests": 4}],
    }
    monthly = [{**row, "client_id": alpha["id"], "client_name": "chart-alpha", "requests": 9,
                "prompt_tokens": 80, "completion_tokens": 35, "cost_usd": 0.75, "unpriced_requests": 1},
               {**row, "client_id": beta["id"], "client_name": "chart-beta", "requests": 4,
                "prompt_tokens": 40, "completion_tokens": 40, "cost_usd": None, "unpriced_requests": 4}]
    asked: list[dict] = []

    def rows_for(q: dict) -> list[dict]:
        asked.append(q)
        if q["group_by"] == "client":
            return monthly
        return daily.get(q["client"], [])

    dash.page.route("**/admin/api/usage?**", lambda route, request: fake_report(route, request, rows_for))
    dash.login()
    page = dash.page
    clients = api_clients(gw)
    wait_for_series(page, len(clients))
    month_start = datetime.now(UTC).date().replace(day=1).isoformat()
    assert {"group_by": "client", "from": month_start} in asked
    assert {q["client"] for q in asked if q["group_by"] == "day"} == set(clients)
    assert all(q["from"] == days[0] for q in asked if q["group_by"] == "day")

    def points(cid: str) -> dict[str, float]:
        dots = page.locator(f"#chart g.series[data-client='{cid}'] circle")
        return {dots.nth(i).get_attribute("data-day"): float(dots.nth(i).get_attribute("data-value"))
                for i in range(dots.count())}

    for cid in clients:
        assert page.locator(f"#chart g.series[data-client='{cid}'] circle").count() == DAYS
        assert page.locator(f"#chart g.series[data-client='{cid}'] polyline").count() == 1
    assert list(points(alpha["id"])) == days
    assert points(alpha["id"])[days[-1]] == 7 and points(alpha["id"])[days[-3]] == 2
    assert points(alpha["id"])[days[-2]] == 0
    assert points(beta["id"])[days[0]] == 4
    legend = page.locator("#legend li").all_inner_texts()
    assert "chart-alpha" in legend and "chart-beta" in legend and len(legend) == len(clients)

    table = page.locator("#usage-table")
    assert table.locator("tbody tr").count() == DAYS
    names = table.locator("thead th").all_inner_texts()
    col = names.index("chart-alpha")
    assert table.locator(f"tbody tr[data-day='{days[-1]}'] td").nth(col).inner_text() == "7"

    page.select_option("#metric", "tokens")
    assert points(alpha["id"])[days[-1]] == 100
    assert points(beta["id"])[days[0]] == 80
    assert "Tokens" in table.locator("caption").inner_text()
    page.select_option("#metric", "cost")
    assert points(alpha["id"])[days[-1]] == 0.5
    cells = table.locator(f"tbody tr[data-day='{days[-3]}'] td")
    assert cells.nth(col).inner_text() == "$0.25 + unpriced"
    beta_col = names.index("chart-beta")
    assert table.locator(f"tbody tr[data-day='{days[0]}'] td").nth(beta_col).inner_text() == "unpriced"

    spend_alpha = dash.row(alpha["id"]).locator("td.spend").inner_text()
    spend_beta = dash.row(beta["id"]).locator("td.spend").inner_text()
    assert spend_alpha.startswith("$0.75 + unpriced") and "9 req" in spend_alpha
    assert spend_beta.startswith("unpriced") and "$0" not in spend_beta
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-usage.png"), full_page=True)
    dash.check_clean()


def test_usage_chart_from_the_gateway(dash, gw):
    """The chart against keyrelay's own usage report after a few chat requests."""
    one, key_one = api_create(gw, name="usage-one")
    two, key_two = api_create(gw, name="usage-two")
    for key, n in ((key_one, 3), (key_two, 1)):
        for _ in range(n):
            assert chat(gw, key).status_code == 200
    today = last_days()[-1]

    def today_rows(cid: str) -> dict:
        r = usage_report(gw, group_by="day", client=cid, **{"from": last_days()[0]})
        assert r.status_code == 200, r.text
        return next((row for row in r.json()["rows"] if row["day"] == today), {"requests": 0})

    deadline = time.monotonic() + 10  # usage records are written in batches
    while (today_rows(one["id"])["requests"], today_rows(two["id"])["requests"]) != (3, 1):
        assert time.monotonic() < deadline, "usage records not reported within 10 s"
        time.sleep(0.25)
    expected = {cid: today_rows(cid) for cid in (one["id"], two["id"])}

    dash.login()
    page = dash.page
    clients = api_clients(gw)
    wait_for_series(page, len(clients))
    for cid in clients:
        assert page.locator(f"#chart g.series[data-client='{cid}'] circle").count() == DAYS

    def today_point(cid: str) -> float:
        dot = page.locator(f"#chart g.series[data-client='{cid}'] circle[data-day='{today}']")
        return float(dot.get_attribute("data-value"))

    assert today_point(one["id"]) == 3 and today_point(two["id"]) == 1
    page.select_option("#metric", "tokens")
    for cid, row in expected.items():
        assert today_point(cid) == row["prompt_tokens"] + row["completion_tokens"]
    spend = dash.row(one["id"]).locator("td.spend").inner_text()
    assert "3 req" in spend and spend != "usage not available"
    if expected[one["id"]]["cost_usd"] is None:
        assert spend.startswith("unpriced")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-usage-live.png"), full_page=True)
    dash.check_clean()
