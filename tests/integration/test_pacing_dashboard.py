"""Issue 15: the dashboard shows "used today / limit" per key and model (headless Chromium)."""
from __future__ import annotations

import time

import requests

from tests.browser import MARKS, chromium
from tests.harness import Server
from tests.mock_upstream import MockUpstream

pytestmark = MARKS

TOKEN = "pacing-dash-token-0015"


def test_dashboard_shows_quota_used_and_limit(tmp_path):
    with MockUpstream() as mock:
        config = {
            "server": {"admin_token": TOKEN},
            "providers": [{"name": "gem", "type": "gemini", "base_url": mock.url + "/v1beta",
                           "keys": ["AIzaPACING-dash-key-0001"],
                           "limits": {"gemini-2.5-flash": {"rpm": 10, "rpd": 250}}}],
            "models": [{"name": "fast", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]}],
        }
        with Server(tmp_path, config) as gw, chromium() as browser:
            for _ in range(2):
                r = requests.post(gw.url + "/v1/chat/completions", timeout=10,
                                  json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200
            # a worker leases slices of capacity (1, then 2): past a slice's 1 s life and the next 0.25 s
            # flush, what it did not use is given back, and "used" is what was used
            time.sleep(1.6)
            page = browser.new_context(viewport={"width": 1600, "height": 600}).new_page()
            page.goto(gw.url + "/admin")
            page.fill("#token", TOKEN)
            page.click("#save")
            page.wait_for_selector("#keys tbody tr td.quota")
            text = page.locator("#keys tbody tr td.quota").first.inner_text()
            assert text == ("gemini-2.5-flash: 2 / 250 requests today, 2 / 10 requests this minute")
