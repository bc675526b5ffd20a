"""Issue 5: the /admin dashboard in headless Chromium: enter the token, disable a key, the API agrees."""
from __future__ import annotations

import time

import pytest
import requests

from tests.browser import MARKS, chromium
from tests.harness import REPO, Server

pytestmark = MARKS

TOKEN = "browser-admin-token-5555"
SECRETS = ("AIzaBROWSER-first-key-0001", "AIzaBROWSER-second-key-0002")
ARTIFACTS = REPO / "tests" / "artifacts"


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    config = {
        "server": {"admin_token": TOKEN},
        # never called: the dashboard only talks to keyrelay
        "providers": [{"name": "gem", "type": "gemini", "base_url": "http://127.0.0.1:9/v1beta",
                       "keys": [SECRETS[0], {"key": SECRETS[1], "label": "backup"}]}],
        "models": [{"name": "fast", "targets": [{"provider": "gem", "model": "gemini-2.5-flash"}]}],
    }
    with Server(tmp_path_factory.mktemp("browser"), config) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def page():
    with chromium() as browser:
        yield browser.new_context(viewport={"width": 1500, "height": 600}).new_page()


def keys(gw: Server) -> dict[str, dict]:
    r = requests.get(gw.url + "/admin/api/keys", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    return {k["id"]: k for k in r.json()["keys"]}


def test_dashboard_disables_a_key(gw, page):
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "Failed to load resource" not in msg.text else None)  # the 401 below

    page.goto(gw.url + "/admin")
    assert page.title() == "keyrelay admin"
    page.wait_for_selector("#status:has-text('admin token')")
    assert page.locator("#keys tbody tr").count() == 0  # nothing without a token

    page.fill("#token", "wrong-token")
    page.click("#save")
    page.wait_for_selector("#status:has-text('Missing or wrong admin token')")

    page.fill("#token", TOKEN)
    page.click("#save")
    page.wait_for_selector("#keys tbody tr >> nth=1")
    assert page.evaluate("sessionStorage.getItem('keyrelay-admin-token')") == TOKEN

    before = keys(gw)
    target = next(k for k in before.values() if k["label"] == "backup")
    row = page.locator(f"#keys tbody tr[data-key-id='{target['id']}']")
    assert f"{SECRETS[1][:4]}…{SECRETS[1][-3:]}" in row.locator("td.key .hint").inner_text()
    assert row.get_attribute("data-state") == "usable"

    page.fill("#reason", "disabled from the browser")
    row.locator("button[data-action='disable']").click()
    page.wait_for_selector(f"#keys tbody tr[data-key-id='{target['id']}'] button[data-action='enable']")
    assert "disabled from the browser" in row.locator("td.state").inner_text()
    assert "by admin@127.0.0.1" in row.locator("td.state").inner_text()

    after = keys(gw)
    assert after[target["id"]]["enabled"] is False
    assert after[target["id"]]["disabled_reason"] == "disabled from the browser"
    other = next(kid for kid in after if kid != target["id"])
    assert after[other]["enabled"] is True

    # the table follows changes made elsewhere (polling every 2 s)
    requests.post(f"{gw.url}/admin/api/keys/{other}/disable", headers={"Authorization": f"Bearer {TOKEN}"},
                  timeout=5)
    started = time.monotonic()
    page.wait_for_selector(f"#keys tbody tr[data-key-id='{other}'] button[data-action='enable']",
                           timeout=5000)
    assert time.monotonic() - started < 4.5

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)
    html = page.content()
    for secret in (*SECRETS, TOKEN):
        assert secret not in html
    assert errors == []
