"""The Audit and Operations tabs of /admin.

Audit: ``GET /admin/api/audit?limit=N`` every 2 s while shown — when, who, what, which key, and what
changed (the fields whose value differs between ``before`` and ``after``); filter by text.
Operations: snapshot export (``GET /admin/api/snapshot``, saved as a file), snapshot import (a file,
``POST /admin/api/snapshot``, after a confirmation), config reload (``POST /admin/api/reload``).
"""
from __future__ import annotations

from proxy.api.dashboard_tab import Tab

AUDIT_BODY = """
<h2>Audit log</h2>
<div class="bar">
  <label for="au-filter">Filter</label>
  <input id="au-filter" type="search" size="24" placeholder="actor, action, key">
  <label for="au-limit">Show</label>
  <select id="au-limit"><option>50</option><option selected>200</option><option>1000</option></select>
</div>
<div id="au-status" role="status"></div>
<div class="table-wrap">
<table id="audit">
  <thead><tr><th>When</th><th>Who</th><th>Action</th><th>Key</th><th>Change</th></tr></thead>
  <tbody></tbody>
</table>
</div>
"""

AUDIT_SCRIPT = r"""
let rows = [];
const show = (v) => v === undefined ? "—" : JSON.stringify(v);
function changes(before, after) {  // the fields that differ; a one-sided row lists what it has
  if (!before && !after) return "";
  if (!before || !after) {
    return Object.entries(before || after).map(([k, v]) => k + " " + show(v)).join(", ");
  }
  const out = [];
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const a = show(before[k]), b = show(after[k]);
    if (a !== b) out.push(k + ": " + a + " → " + b);
  }
  return out.join("; ") || "no change";
}
function render() {
  const text = $("#au-filter").value.trim().toLowerCase();
  const tbody = $("#audit tbody");
  tbody.replaceChildren();
  let shown = 0;
  for (const r of rows) {
    const change = changes(r.before, r.after);
    const hit = (v) => v && v.toLowerCase().includes(text);
    if (text && ![r.actor, r.action, r.key_id, change].some(hit)) continue;
    const tr = document.createElement("tr");
    tr.dataset.auditId = r.id;
    cell(tr, when(r.at)).title = new Date(r.at * 1000).toISOString();
    cell(tr, r.actor);
    cell(tr, r.action, "action");
    const k = cell(tr, "");
    if (r.key_id) k.appendChild(el("code", r.key_id));
    cell(tr, change, "err");
    tbody.appendChild(tr);
    shown++;
  }
  const n = rows.length + " entr" + (rows.length === 1 ? "y" : "ies");
  say("#au-status", (text ? shown + " of " + n + " match" : n) + ", newest first", "muted");
}
async function refresh() {
  if (!token()) { say("#au-status", "Enter the admin token to see the audit log.", "warn"); return; }
  try {
    rows = (await api("GET", "/audit?limit=" + $("#au-limit").value)).audit;
    render();
  } catch (e) {
    say("#au-status", e.message, "bad");
  }
}
$("#au-filter").addEventListener("input", render);
$("#au-limit").addEventListener("change", refresh);
registerTab("audit", { show: refresh, poll: refresh, forget: () => { rows = []; render(); } });
"""

OPS_BODY = """
<h2>Snapshot</h2>
<p class="muted">A snapshot holds every key's operator state (enabled, weight, health, circuit, cooldowns,
counters), never a secret.</p>
<div class="bar">
  <button id="snap-export" type="button">Export snapshot</button>
  <a id="snap-link" hidden download="keyrelay-snapshot.json">save the file</a>
</div>
<div class="bar">
  <label for="snap-file">Import a snapshot</label>
  <input id="snap-file" type="file" accept=".json,application/json">
  <button id="snap-import" type="button">Import</button>
</div>
<h2>Configuration</h2>
<div class="bar">
  <button id="reload" type="button">Reload the config file</button>
  <span class="muted">validated first; a bad file is refused and the running config keeps serving</span>
</div>
"""

OPS_SCRIPT = r"""
let link = null;
$("#snap-export").addEventListener("click", () => attempt("export snapshot", async () => {
  const doc = await api("GET", "/snapshot");
  if (link) URL.revokeObjectURL(link);
  link = URL.createObjectURL(new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" }));
  const a = $("#snap-link");
  a.href = link; a.hidden = false;
  a.click();
  return (doc.keys || []).length + " key(s) at " + clock(Date.now() / 1000);
}));
$("#snap-import").addEventListener("click", async () => {
  const file = $("#snap-file").files[0];
  if (!file) { notify("import snapshot: choose a file first", "bad"); return; }
  if (!window.confirm("Replace the state of the keys in " + file.name + "?")) return;
  await attempt("import snapshot " + file.name, async () => {
    const text = await file.text();  // sent as it is: re-serializing would break its checksum
    try { JSON.parse(text); } catch (e) { throw new Error("not a JSON file"); }
    const r = await api("POST", "/snapshot", text);
    return r.imported + " key(s) imported";
  });
});
$("#reload").addEventListener("click", async () => {
  if (!window.confirm("Reload the config file? Workers restart gracefully.")) return;
  await attempt("reload", async () => {
    const r = await api("POST", "/reload");
    return "config " + r.config + " valid, workers reloading (" + r.providers.length + " provider(s), " +
      r.models.length + " model(s))" + (r.notices && r.notices.length ? "; " + r.notices.join("; ") : "");
  });
});
registerTab("ops", {});
"""

AUDIT = Tab("audit", "Audit log", AUDIT_BODY, AUDIT_SCRIPT)
OPERATIONS = Tab("ops", "Snapshot & reload", OPS_BODY, OPS_SCRIPT)
