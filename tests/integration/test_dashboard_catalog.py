"""The dashboard's Catalog panel in headless Chromium against a real gunicorn keyrelay whose catalog comes
from the mock catalog server: search, the free filter, prices per 1M tokens, the free badge, the Refresh
button; no console error and no CSP violation."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser import MARKS, chromium
from tests.harness import REPO, Server, mock_config
from tests.mock_catalog import MockCatalog

pytestmark = MARKS

TOKEN = "dashboard-catalog-admin-token-14"
ARTIFACTS = REPO / "tests" / "artifacts"
WATCH = """window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective));"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    with MockCatalog() as catalog:
        config = mock_config(admin_token=TOKEN)
        config["catalog"] = {"sources": ["openrouter"], "urls": catalog.urls}
        with Server(tmp_path_factory.mktemp("dashboard-catalog"), config, workers=1) as gateway:
            yield gateway, catalog


def test_catalog_panel_searches_filters_and_refreshes(gw):
    server, catalog = gw
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1500, "height": 900})
        context.add_init_script(WATCH)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(server.url + "/admin#catalog")  # the Catalog tab
        page.fill("#token", TOKEN)
        page.click("#save")
        page.wait_for_selector("#catalog tbody tr >> nth=17")  # the 18 OpenRouter entries
        assert page.locator("#catalog tbody tr").count() == 18
        assert "openrouter: 18 entries" in page.inner_text("#catalog-sources")

        page.fill("#cat-q", "gpt-oss")
        expect(page.locator("#catalog tbody tr")).to_have_count(2)
        free = page.locator("#catalog tbody tr[data-model='openrouter/openai/gpt-oss-20b:free']")
        paid = page.locator("#catalog tbody tr[data-model='openrouter/openai/gpt-oss-20b']")
        assert free.locator("span.free").count() == 1 and paid.locator("span.free").count() == 0
        cells = paid.locator("td").all_inner_texts()
        assert cells[2] == "131,072" and cells[4] == "text" and cells[5:7] == ["$0.0300", "$0.14"]

        page.fill("#cat-q", "")
        page.check("#cat-free")
        expect(page.locator("#catalog tbody tr")).to_have_count(6)
        assert page.locator("#catalog tbody tr span.free").count() == 6

        before = catalog.requests["openrouter"]
        page.click("#cat-refresh")
        expect(page.locator("#catalog-action")).to_have_text("refreshed openrouter: not_modified")
        assert catalog.requests["openrouter"] == before + 1

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "admin-catalog.png"), full_page=True)
        assert TOKEN not in page.content()
        assert errors == [] and page.evaluate("() => window.__csp") == []
        context.close()
