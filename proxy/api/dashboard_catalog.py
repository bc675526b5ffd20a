"""The dashboard's Catalog tab (``dashboard.TABS``): search the model
catalog (``GET /admin/api/catalog?provider=&free=true&q=``), prices per 1M tokens, context window, input
modalities, a free badge; each source's state; a Refresh button (``POST /admin/api/catalog/refresh``).
Every value is inserted with textContent, never as HTML. It uses the page script's helpers ($, api, el,
cell, say, token)."""
from __future__ import annotations

from proxy.api.dashboard_tab import Tab

STYLE = """
  .free { display: inline-block; padding: 0 .4rem; border-radius: 3px; background: #176c2e; color: #fff;
          font-size: 12px; }
  #catalog-status, #catalog-sources, #catalog-action { min-height: 1.2em; margin-bottom: .4rem; }
"""

BODY = """
<h2>Catalog</h2>
<form id="catalog-search" class="bar" autocomplete="off">
  <label for="cat-q">Search</label><input id="cat-q" type="search" size="24" placeholder="model id or name">
  <label for="cat-provider">Provider</label>
  <select id="cat-provider"><option value="">all</option></select>
  <label><input id="cat-free" type="checkbox"> free only</label>
  <button id="cat-refresh" type="button">Refresh from sources</button>
</form>
<div id="catalog-sources" class="muted"></div>
<div id="catalog-action" role="status"></div>
<div id="catalog-status" role="status"></div>
<div class="table-wrap"><table id="catalog">
  <thead><tr>
    <th>Provider</th><th>Model</th><th class="num">Context</th><th class="num">Max output</th><th>Input</th>
    <th class="num">Input $/1M</th><th class="num">Output $/1M</th><th>Free</th><th>Source</th>
  </tr></thead>
  <tbody></tbody>
</table></div>
"""

SCRIPT = r"""
// ------------------------------------------------------------------------------------------ catalog

const catalogProviders = new Set();
const perMillion = (v) => v === null || v === undefined ? "unknown"
  : v === 0 ? "$0" : "$" + Number(v).toFixed(v < 0.1 ? 4 : 2);

function renderCatalog(data) {
  const tbody = $("#catalog tbody");
  tbody.replaceChildren();
  for (const e of data.entries) {
    const tr = document.createElement("tr");
    tr.dataset.model = e.provider + "/" + e.model;
    cell(tr, e.provider);
    cell(tr, "").appendChild(el("code", e.model));
    cell(tr, e.context === null ? "?" : e.context.toLocaleString("en-US"), "num");
    cell(tr, e.max_output === null ? "?" : e.max_output.toLocaleString("en-US"), "num");
    cell(tr, (e.input_modalities || []).join(", ") || "?");
    cell(tr, perMillion(e.price_input), "num");
    cell(tr, perMillion(e.price_output), "num");
    const free = cell(tr, "");
    if (e.free) free.appendChild(el("span", "free", "free"));
    cell(tr, e.source);
    tbody.appendChild(tr);
    if (!catalogProviders.has(e.provider)) {
      catalogProviders.add(e.provider);
      const opt = el("option", e.provider);
      opt.value = e.provider;
      $("#cat-provider").appendChild(opt);
    }
  }
  const sources = Object.entries(data.sources || {}).map(([name, s]) => name + ": " + s.entries + " entries"
    + (s.ok_at ? ", updated " + new Date(s.ok_at * 1000).toLocaleString() : "")
    + (s.error ? " — last refresh failed: " + s.error : ""));
  $("#catalog-sources").textContent = sources.length ? sources.join(" · ") : "no catalog data yet";
}

async function refreshCatalog() {
  if (!token()) return;
  const params = new URLSearchParams();
  if ($("#cat-q").value.trim()) params.set("q", $("#cat-q").value.trim());
  if ($("#cat-provider").value) params.set("provider", $("#cat-provider").value);
  if ($("#cat-free").checked) params.set("free", "true");
  try {
    const data = await api("GET", "/catalog?" + params.toString());
    renderCatalog(data);
    say("#catalog-status", data.count + " model(s)", "ok");
  } catch (e) {
    say("#catalog-status", e.message, "bad");
  }
}

async function refreshSources() {
  say("#catalog-action", "refreshing…", "muted");
  try {
    const data = await api("POST", "/catalog/refresh");
    say("#catalog-action", "refreshed " + Object.entries(data.refreshed).map(([s, r]) => s + ": " + r)
      .join(", "), Object.values(data.refreshed).includes("error") ? "bad" : "ok");
  } catch (e) {
    say("#catalog-action", e.message, "bad");
    return;
  }
  refreshCatalog();
}

let catalogTimer = null;
$("#catalog-search").addEventListener("submit", (ev) => { ev.preventDefault(); refreshCatalog(); });
$("#cat-q").addEventListener("input", () => {
  clearTimeout(catalogTimer);
  catalogTimer = setTimeout(refreshCatalog, 250);
});
$("#cat-provider").addEventListener("change", refreshCatalog);
$("#cat-free").addEventListener("change", refreshCatalog);
$("#cat-refresh").addEventListener("click", refreshSources);
registerTab("catalog", { show: refreshCatalog });
"""

TAB = Tab("catalog", "Catalog", BODY, SCRIPT, STYLE)
