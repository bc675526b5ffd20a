"""Issue 16: the dashboard's Traffic panel in headless Chromium: the list, one transaction with its
attempts, a timing bar and the bodies."""
from __future__ import annotations

import requests

from tests.browser import MARKS, chromium
from tests.harness import Server
from tests.mock_upstream import error

pytestmark = MARKS

TOKEN = "traffic-admin-token-0123456789"
KEYS = ["gem-traffic-key-one-0001", "gem-traffic-key-two-0002"]


def test_traffic_panel_shows_a_failed_over_transaction(tmp_path, mock):
    config = {
        "server": {"admin_token": TOKEN}, "auth": {"mode": "open"},
        "retry": {"attempts": 3, "backoff_base_s": 0.01, "backoff_cap_s": 0.02},
        "inspector": {"enabled": True},
        "providers": [{"name": "gem", "type": "gemini", "base_url": mock.url + "/v1beta", "keys": KEYS}],
        "models": [{"name": "flash", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]}],
    }
    with Server(tmp_path, config) as gw:
        mock.script(model="gemini-2.5-flash", behaviour=error(503), times=1)
        r = requests.post(gw.url + "/v1/chat/completions", headers={"X-Request-ID": "dash-1"},
                          json={"model": "flash", "messages": [{"role": "user", "content": "show me"}]},
                          timeout=30)
        assert r.status_code == 200
        with chromium() as browser:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(gw.url + "/admin#traffic")
            page.fill("#token", TOKEN)
            page.click("#save")
            row = page.locator("#traffic-list tbody tr:has-text('dash-1')")
            row.wait_for(timeout=15000)
            assert "200" in row.inner_text() and "flash" in row.inner_text()
            row.click()
            page.wait_for_selector("#td-timing svg rect")
            assert page.locator("#td-timing svg rect").count() >= 2 + 2 * 4  # client + two attempts
            parts = page.locator("#td-parts").inner_text()
            assert "Attempt 1" in parts and "Attempt 2" in parts and "transient" in parts
            assert "echo: show me" in parts and "x-goog-api-key: [REDACTED]" in parts
            assert not any(k in page.content() for k in KEYS)
            assert not errors, errors
