"""The Keys tab of /admin ("can it serve?") and a key's history page (``#key/<id>``).

Keys: ``GET /admin/api/keys`` every 2 s while shown. A summary line (per provider and model: usable keys
out of all, the soonest recovery), then one row per key with its one true state (``key_states.py``:
usable / cooling until HH:MM for model X / circuit open / invalid / disabled by whom), a 24 h sparkline
(``GET /admin/api/history?window=24h&step=30m&by=key``, every 60 s), requests, the last error with its
time, and the actions of the API: enable / disable (with a reason), test, revalidate, reset, edit label
and weight, remove; add one key or import many. Sorting (click a header) and filtering (text, state,
provider). Results of actions are messages that stay until dismissed.

Key page: the key's state and, over a chosen window, requests per step by outcome, latency p50 / p95 and
its cooldown / open-circuit periods (``GET /admin/api/keys/<id>/history``), as inline SVG.
"""
from __future__ import annotations

from proxy.api.dashboard_tab import Tab

STYLE = """
  #summary { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; margin: .2rem 0 .8rem; }
  #summary .headline { font-weight: 600; margin-right: .4rem; }
  .pill { border: 1px solid #cdd; border-radius: 999px; padding: .1rem .6rem; background: #fff; }
  .pill.ok { border-color: #9fcfaa; } .pill.bad { border-color: #e4b4b0; background: #fdf0ef; }
  .pill.warn { border-color: #e9cf8f; background: #fff8e6; }
  .badge { display: inline-block; border-radius: 4px; padding: 0 .45rem; font-size: 12px; font-weight: 600;
           white-space: nowrap; }
  .st-usable { background: #e3f3e6; color: #176c2e; } .st-cooling { background: #fff1cc; color: #7a5200; }
  .st-half_open { background: #fde7d2; color: #8a4100; }
  .st-circuit_open { background: #fbdcd9; color: #8f1d15; }
  .st-invalid { background: #b3261e; color: #fff; } .st-disabled { background: #e4e6eb; color: #3b4252; }
  .st-retired { background: #e4e6eb; color: #667; }
  td.key { min-width: 10rem; } td.key .label { font-weight: 600; }
  td.state { min-width: 11rem; max-width: 18rem; }
  td.actions { min-width: 9rem; }
  td.quota { min-width: 10rem; font-size: 13px; }
  td.actions .acts { display: flex; flex-wrap: wrap; gap: .25rem; }
  details.more { position: relative; }
  details.more summary { list-style: none; cursor: pointer; border: 1px solid #889; border-radius: 4px;
                         padding: .25rem .6rem; background: #fff; }
  details.more summary::-webkit-details-marker { display: none; }
  details.more[open] .menu { position: absolute; right: 0; z-index: 5; display: flex; flex-direction: column;
                             gap: .2rem; background: #fff; border: 1px solid #ccd; padding: .3rem;
                             border-radius: 5px; box-shadow: 0 3px 10px rgba(0,0,0,.12); }
  #add-keys { background: #fff; border: 1px solid #e2e4ea; border-radius: 6px; padding: .4rem .8rem;
              margin-bottom: .8rem; }
  #add-keys summary { cursor: pointer; font-weight: 600; }
  #add-keys form { margin: .6rem 0; }
  #edit-key { background: #fff8e1; border: 1px solid #e9cf8f; border-radius: 6px; padding: .5rem .8rem; }
  .narrow { display: none; }
  @media (max-width: 1000px) {
    .wide { display: none; } .narrow { display: block; }
    td.key { min-width: 8.5rem; } td.state { min-width: 9.5rem; } .err { min-width: 9rem; }
    td.actions { min-width: 0; } td.actions .acts { flex-direction: column; align-items: stretch; }
    td.actions button, details.more summary { padding: .15rem .5rem; font-size: 13px; text-align: center; }
    th, td { padding: .35rem .35rem; }
  }
  #kp-totals { display: flex; flex-wrap: wrap; gap: .4rem; }
"""

BODY = """
<h2>Keys</h2>
<div id="summary" aria-live="polite"></div>
<details id="add-keys">
  <summary>Add or import upstream keys</summary>
  <form id="add-key" autocomplete="off">
    <label for="ak-provider">Provider</label><select id="ak-provider"></select>
    <label for="ak-key">Key</label><input id="ak-key" type="password" size="26" required autocomplete="off">
    <label for="ak-label">Label</label><input id="ak-label" size="12" maxlength="64">
    <label for="ak-weight">Weight</label><input id="ak-weight" type="number" min="0.01" step="any">
    <label for="ak-project">Project</label><input id="ak-project" size="12" maxlength="200">
    <button id="ak-add" type="submit" class="primary">Add key</button>
  </form>
  <form id="import-keys" autocomplete="off">
    <label for="ik-provider">Provider</label><select id="ik-provider"></select>
    <textarea id="ik-keys" rows="3" cols="44" placeholder="keys, one per line or comma-separated"></textarea>
    <button id="ik-import" type="submit">Import</button>
  </form>
  <div class="muted small">Runtime keys are stored encrypted; the secret is never shown again.</div>
</details>
<form id="edit-key" hidden autocomplete="off">
  <strong id="ek-title"></strong>
  <label for="ek-label">Label</label><input id="ek-label" size="16" maxlength="64">
  <label for="ek-weight">Weight</label><input id="ek-weight" type="number" min="0.01" step="any">
  <button id="ek-save" type="submit" class="primary">Save</button>
  <button id="ek-cancel" type="button">Cancel</button>
</form>
<div class="bar">
  <label for="k-filter">Filter</label>
  <input id="k-filter" type="search" size="18" placeholder="id, label, hint, error">
  <label for="k-state">State</label>
  <select id="k-state"><option value="">all</option><option value="usable">usable</option>
    <option value="cooling">cooling</option><option value="circuit_open">circuit open</option>
    <option value="half_open">half-open</option><option value="invalid">invalid</option>
    <option value="disabled">disabled</option></select>
  <label for="k-provider">Provider</label><select id="k-provider"><option value="">all</option></select>
  <label for="reason">Reason for disabling</label>
  <input id="reason" type="text" size="18" maxlength="200" placeholder="optional">
</div>
<div id="status" role="status"></div>
<div class="table-wrap">
<table id="keys">
  <thead><tr>
    <th data-sort="name">Key</th><th data-sort="state">State</th>
    <th data-sort="weight" class="num wide">Weight</th>
    <th data-sort="health" class="num wide">Health</th><th>Last 24 h</th>
    <th class="quota" hidden>Quota (used / limit)</th>
    <th data-sort="requests" class="num">Requests</th><th data-sort="last_error_at">Last error</th>
    <th>Actions</th>
  </tr></thead>
  <tbody></tbody>
</table>
</div>
"""

SCRIPT = r"""
const STATE_RANK = { usable: 0, cooling: 1, half_open: 2, circuit_open: 3, invalid: 4, disabled: 5,
                     retired: 6 };
const STATE_NAME = { usable: "usable", cooling: "cooling", half_open: "half-open",
                     circuit_open: "circuit open",
                     invalid: "invalid", disabled: "disabled", retired: "retired" };
let keys = [], summary = [], spark = null, sparkAt = 0;
let sort = { by: "state", dir: 1 };
let openMenu = null;  // the key whose "More" menu is open (kept open across refreshes)
const status = (text, cls) => say("#status", text, cls);
const nameOf = (k) => k.label || k.id;

function stateLines(k) {  // [badge text, detail lines]
  const now = Date.now() / 1000, lines = [];
  const models = Object.entries(k.state_models || {}).sort((a, b) => a[1] - b[1]);
  if (k.state === "disabled") {
    lines.push(k.disabled_by ? "by " + k.disabled_by + " at " + when(k.disabled_at)
                             : "by config or snapshot");
    if (k.state_reason) lines.push("“" + k.state_reason + "”");
  } else if (k.state === "invalid") {
    lines.push((k.state_reason || "the upstream refused the key") +
               (k.status_at ? " · since " + when(k.status_at) : ""));
  } else if (k.state === "circuit_open") {
    lines.push(k.state_until ? "until " + until(k.state_until) + ", then one probe" : "open");
  } else if (k.state === "half_open") {
    lines.push("one probe request in flight" +
               (k.state_until ? " (until " + clock(k.state_until) + ")" : ""));
  }
  for (const [m, u] of models) {
    if (u <= now) continue;
    lines.push([(k.state === "cooling" ? "" : "also cooling ") + "until " + until(u) + " for ", m]);
  }
  if (k.state === "cooling") lines.push("usable for other models");
  return [STATE_NAME[k.state] || k.state, lines];
}

function sortValue(k) {
  switch (sort.by) {
    case "name": return (k.label || "~") + k.id;
    case "state": return STATE_RANK[k.state] * 1e12 + (k.state_until || 0);
    case "last_error_at": return k.last_error_at || 0;
    default: return k[sort.by] || 0;
  }
}

function visibleKeys() {
  const text = $("#k-filter").value.trim().toLowerCase();
  const st = $("#k-state").value, pr = $("#k-provider").value;
  const out = keys.filter((k) => (!st || k.state === st) && (!pr || k.provider === pr) && (!text ||
    [k.id, k.label, k.provider, k.hint, k.last_error, STATE_NAME[k.state]].some(
      (v) => v && String(v).toLowerCase().includes(text))));
  out.sort((a, b) => {
    const x = sortValue(a), y = sortValue(b);
    return (x < y ? -1 : x > y ? 1 : 0) * sort.dir;
  });
  return out;
}

const WINDOW_NAMES = {rpd: "requests today", tpd: "tokens today", rpm: "requests this minute",
                      tpm: "tokens this minute"};
function quotaText(limits) {  // "gemini-2.5-flash: 3 / 250 requests today, 1 / 10 requests this minute"
  return Object.entries(limits || {}).map(([model, windows]) => model + ": " +
    ["rpd", "tpd", "rpm", "tpm"].filter((w) => windows[w])
      .map((w) => windows[w].used + " / " + windows[w].limit + " " + WINDOW_NAMES[w]).join(", ")).join("; ");
}

function actionButton(parent, label, action, k, cls) {
  const b = el("button", label, cls);
  b.type = "button"; b.dataset.action = action; b.dataset.key = k.id;
  b.addEventListener("click", () => act(action, k));
  parent.appendChild(b);
}

function renderSummary() {
  const box = $("#summary");
  box.replaceChildren();
  if (!summary.length) return;
  const dead = summary.filter((s) => s.usable === 0);
  const head = el("span", dead.length ? "Cannot serve " + dead.map((s) => s.model).join(", ") + "."
                                      : "Can serve every model.", "headline " + (dead.length ? "bad" : "ok"));
  box.appendChild(head);
  for (const s of summary) {
    let text = s.provider + " · " + s.model + ": " + s.usable + " of " + s.keys + " usable";
    if (s.soonest_recovery_at && s.usable < s.keys) text += " · next back " + until(s.soonest_recovery_at);
    const pill = el("span", text, "pill " + (s.usable === 0 ? "bad" : s.usable < s.keys ? "warn" : "ok"));
    pill.dataset.provider = s.provider; pill.dataset.model = s.model;
    box.appendChild(pill);
  }
}

function renderKeys() {
  const tbody = $("#keys tbody");
  tbody.replaceChildren();
  for (const th of document.querySelectorAll("#keys th[data-sort]")) {
    const dir = sort.dir > 0 ? "ascending" : "descending";
    th.setAttribute("aria-sort", th.dataset.sort === sort.by ? dir : "none");
  }
  const paced = keys.some((k) => Object.keys(k.limits || {}).length);  // the quota column, when any
  $("#keys th.quota").hidden = !paced;
  for (const k of visibleKeys()) {
    const tr = document.createElement("tr");
    tr.dataset.keyId = k.id; tr.dataset.state = k.state;
    const key = cell(tr, "", "key");
    key.appendChild(el("div", k.label || "(no label)", k.label ? "label" : "muted"));
    key.appendChild(el("code", k.id));
    key.appendChild(el("div", k.provider + (k.hint ? " · " + k.hint : " · no key"), "muted small hint"));
    key.appendChild(el("div", "weight " + k.weight + " · health " + Number(k.health).toFixed(2),
                       "muted small narrow"));
    const st = cell(tr, "", "state");
    const [badge, lines] = stateLines(k);
    st.appendChild(el("span", badge, "badge st-" + k.state));
    for (const line of lines) {  // [text, model]: a model name never breaks at its hyphens
      const d = el("div", Array.isArray(line) ? line[0] : line, "small");
      if (Array.isArray(line)) d.appendChild(el("span", line[1], "nowrap"));
      st.appendChild(d);
    }
    cell(tr, k.weight, "num weight wide");
    cell(tr, Number(k.health).toFixed(2), "num wide " + (k.health < 0.5 ? "warn" : ""));
    const sp = cell(tr, "", "spark");
    if (spark && spark[k.id]) sp.appendChild(sparkline(spark[k.id], 96, 26));
    else if (spark) sp.appendChild(el("span", "no traffic", "muted small"));
    if (paced) cell(tr, quotaText(k.limits), "quota");
    const req = cell(tr, k.requests.toLocaleString(), "num requests");
    if (k.errors) {
      const n = k.errors.toLocaleString() + (k.errors === 1 ? " error" : " errors");
      req.appendChild(el("div", n, "small warn"));
    }
    const err = cell(tr, "", "err");
    if (k.last_error) {
      const t = el("div", k.last_error, "clamp");
      t.title = k.last_error;
      err.appendChild(t);
      if (k.last_error_at) err.appendChild(el("div", "at " + when(k.last_error_at), "muted small"));
    } else {
      err.appendChild(el("span", "none", "muted"));
    }
    const acts = el("div", null, "acts");
    cell(tr, "", "actions").appendChild(acts);
    if (k.enabled) actionButton(acts, "Disable", "disable", k);
    else actionButton(acts, "Enable", "enable", k);
    if (k.hint) actionButton(acts, "Test", "test", k);
    actionButton(acts, "History", "history", k);
    const more = el("details", null, "more");
    more.dataset.key = k.id;
    more.appendChild(el("summary", "More"));
    const menu = el("div", null, "menu");
    actionButton(menu, "Edit label / weight", "edit", k);
    actionButton(menu, "Revalidate", "revalidate", k);
    actionButton(menu, "Reset", "reset", k);
    if (k.source === "runtime") actionButton(menu, "Remove", "remove", k, "danger");
    else menu.appendChild(el("span", "from the config file: remove it there", "muted small"));
    more.appendChild(menu);
    if (openMenu === k.id) more.open = true;
    more.addEventListener("toggle", () => {
      openMenu = more.open ? k.id : (openMenu === k.id ? null : openMenu);
    });
    acts.appendChild(more);
    tbody.appendChild(tr);
  }
}

function providers() {
  const names = [...new Set([...keys.map((k) => k.provider), ...summary.map((s) => s.provider)])].sort();
  for (const sel of ["#ak-provider", "#ik-provider", "#k-provider"]) {
    const s = $(sel), keep = s.value;
    const wanted = (sel === "#k-provider" ? [""] : []).concat(names);
    if ([...s.options].map((o) => o.value).join() === wanted.join()) continue;
    s.replaceChildren(...wanted.map((n) => { const o = el("option", n || "all"); o.value = n; return o; }));
    if (wanted.includes(keep)) s.value = keep;
  }
}

async function refreshSpark(force) {
  if (!token() || (!force && Date.now() - sparkAt < 60000)) return;
  sparkAt = Date.now();
  try {
    const h = await api("GET", "/history?window=24h&step=30m&by=key");
    spark = {};
    for (const [kid, cells] of Object.entries(h.keys || {})) {
      spark[kid] = cells.map(([requests, ok]) => ({ requests, ok }));
    }
    renderKeys();
  } catch (e) {
    spark = null;
  }
}

async function refreshKeys() {
  if (!token()) { status("Enter the admin token to see the keys.", "warn"); return; }
  try {
    const data = await api("GET", "/keys");
    keys = data.keys; summary = data.summary || [];
    providers();
    renderSummary();
    renderKeys();
    status("Updated " + clock(Date.now() / 1000) + " · " + keys.length + " key(s)", "ok muted");
    refreshSpark(false);
  } catch (e) {
    status(e.message, "bad");
  }
}

const keyPath = (k, suffix) => "/keys/" + encodeURIComponent(k.id) + (suffix || "");

async function act(action, k) {
  const name = action + " " + nameOf(k);
  if (action === "history") { go("#key/" + k.id); return; }
  if (action === "edit") { editKey(k); return; }
  const question = "Remove key " + nameOf(k) + " (" + k.id + ")? Its secret is deleted.";
  if (action === "remove" && !window.confirm(question)) return;
  const done = await attempt(name, async () => {
    if (action === "disable") {
      await api("POST", keyPath(k, "/disable"), { reason: $("#reason").value });
      return "disabled";
    }
    if (action === "test") {
      const r = await api("POST", keyPath(k, "/test"));
      const timed = r.latency_ms !== undefined && r.latency_ms !== null;
      const ms = timed ? " (" + Math.round(r.latency_ms) + " ms)" : "";
      if (!r.ok) throw new Error(r.outcome + (r.error ? ": " + r.error : "") + ms);
      return "ok in " + Math.round(r.latency_ms) + " ms";
    }
    if (action === "revalidate") {
      const r = await api("POST", keyPath(k, "/revalidate"));
      if (!r.probe.ok) {
        throw new Error("probe " + r.probe.outcome + (r.probe.error ? ": " + r.probe.error : ""));
      }
      return "probe passed; the key is " + r.key.state;
    }
    if (action === "remove") {
      await api("DELETE", keyPath(k));
      return "removed";
    }
    await api("POST", keyPath(k, "/" + action));
    return action === "reset" ? "circuit closed, cooldowns cleared, health 1" : action + "d";
  });
  if (done && action === "disable") $("#reason").value = "";
  refreshKeys();
}

let editing = null;
function editKey(k) {
  editing = k;
  openMenu = null;
  $("#ek-title").textContent = "Edit " + nameOf(k) + " (" + k.id + ")";
  $("#ek-label").value = k.label || "";
  $("#ek-weight").value = k.weight;
  $("#edit-key").hidden = false;
  $("#ek-label").focus();
}
$("#ek-cancel").addEventListener("click", () => { $("#edit-key").hidden = true; editing = null; });
$("#edit-key").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const k = editing;
  if (!k) return;
  const body = {};
  const label = $("#ek-label").value.trim(), weight = Number($("#ek-weight").value);
  if (label !== (k.label || "")) body.label = label;
  if ($("#ek-weight").value !== "" && weight !== k.weight) body.weight = weight;
  if (!Object.keys(body).length) { $("#edit-key").hidden = true; return; }
  const ok = await attempt("edit " + nameOf(k), async () => {
    await api("PATCH", keyPath(k), body);
    return Object.entries(body).map(([f, v]) => f + " " + JSON.stringify(v)).join(", ");
  });
  if (ok) { $("#edit-key").hidden = true; editing = null; }
  refreshKeys();
});

$("#add-key").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { provider: $("#ak-provider").value, key: $("#ak-key").value.trim() };
  $("#ak-key").value = "";  // the secret leaves the page at once, whatever the answer
  const label = $("#ak-label").value.trim(), project = $("#ak-project").value.trim();
  if (label) body.label = label;
  if (project) body.project = project;
  if ($("#ak-weight").value !== "") body.weight = Number($("#ak-weight").value);
  const ok = await attempt("add key to " + body.provider, async () => {
    const r = await api("POST", "/keys", body);
    const id = r.id || (r.key && r.key.id), hint = r.hint || (r.key && r.key.hint);
    return "added " + id + (hint ? " (" + hint + ")" : "");
  });
  if (ok) { $("#ak-label").value = ""; $("#ak-weight").value = ""; $("#ak-project").value = ""; }
  refreshKeys();
});
$("#import-keys").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const body = { provider: $("#ik-provider").value, keys: $("#ik-keys").value };
  $("#ik-keys").value = "";
  await attempt("import to " + body.provider, async () => {
    const r = await api("POST", "/keys/import", body);
    const count = (v) => Array.isArray(v) ? v.length : v;
    return count(r.added) + " added, " + count(r.duplicates) + " duplicates, " + count(r.invalid) +
      " invalid";
  });
  refreshKeys();
});

for (const th of document.querySelectorAll("#keys th[data-sort]")) {
  th.addEventListener("click", () => {
    sort = { by: th.dataset.sort, dir: sort.by === th.dataset.sort ? -sort.dir : 1 };
    renderKeys();
  });
}
for (const sel of ["#k-filter", "#k-state", "#k-provider"]) $(sel).addEventListener("input", renderKeys);

registerTab("keys", {
  show: () => { refreshKeys(); refreshSpark(true); },
  poll: refreshKeys,
  forget: () => { keys = []; summary = []; spark = null; renderKeys(); renderSummary(); },
});
"""

PAGE_BODY = """
<p><a href="#keys" id="kp-back">← all keys</a></p>
<h2 id="kp-title">Key</h2>
<div id="kp-state" class="bar"></div>
<div class="bar">
  <label for="kp-window">Window</label>
  <select id="kp-window">
    <option value="1h|1m">last hour, per minute</option>
    <option value="24h|5m" selected>last 24 h, per 5 min</option>
    <option value="48h|15m">last 48 h, per 15 min</option>
    <option value="7d|1h">last 7 days, per hour</option>
    <option value="30d|6h">last 30 days, per 6 h</option>
  </select>
  <label for="kp-model">Model</label><select id="kp-model"><option value="">all</option></select>
  <span id="kp-status" class="muted"></span>
</div>
<div id="kp-totals"></div>
<h3>Requests per step, by outcome</h3>
<div id="kp-requests"></div>
<h3>Latency of answered requests (ms)</h3>
<div id="kp-latency"></div>
<h3>Cooldowns and open circuits</h3>
<div id="kp-periods"></div>
<div class="table-wrap">
<table id="kp-period-table">
  <thead><tr><th>What</th><th>Model</th><th>From</th><th>Until</th><th class="num">Length</th></tr></thead>
  <tbody></tbody>
</table>
</div>
"""

PAGE_SCRIPT = r"""
let kid = null, key = null, models = [], ticks = 0;

function pill(parent, text, cls) { parent.appendChild(el("span", text, "pill " + (cls || ""))); }

async function loadKey() {
  const data = await api("GET", "/keys/" + encodeURIComponent(kid));
  key = data.key;
  $("#kp-title").textContent = (key.label || "(no label)") + " · " + key.id + " · " + key.provider +
    (key.hint ? " · " + key.hint : "");
  const box = $("#kp-state");
  box.replaceChildren(el("span", key.state.replace("_", " "), "badge st-" + key.state));
  const detail = key.state === "disabled" ? (key.disabled_by ? "disabled by " + key.disabled_by + " at " +
      when(key.disabled_at) : "disabled") + (key.state_reason ? " — “" + key.state_reason + "”" : "")
    : key.state === "invalid" ? (key.state_reason || "")
    : key.state_until && key.state !== "cooling" ? "until " + until(key.state_until) : "";
  if (detail) box.appendChild(el("span", detail));
  for (const [m, u] of Object.entries(key.state_models || {})) box.appendChild(el("span", "cooling for " + m +
                                                                             " until " + until(u), "warn"));
  box.appendChild(el("span", "weight " + key.weight + " · health " + Number(key.health).toFixed(2) + " · " +
                             key.requests.toLocaleString() + " requests since created", "muted"));
}

async function loadModels() {
  try {
    const s = (await api("GET", "/keys")).summary || [];
    models = [...new Set(s.filter((x) => x.provider === key.provider).map((x) => x.model))];
  } catch (e) { models = []; }
  const sel = $("#kp-model"), keep = sel.value;
  const option = (m) => { const o = el("option", m || "all"); o.value = m; return o; };
  sel.replaceChildren(...[""].concat(models).map(option));
  sel.value = models.includes(keep) ? keep : "";
}

function drawPeriods(h) {
  const W = 760, rows = {}, L = 150, R = 16;
  for (const p of h.periods) {
    const name = p.kind === "cooldown" ? "cooling · " + p.model : "circuit open";
    (rows[name] = rows[name] || []).push(p);
  }
  const names = Object.keys(rows).sort();
  const H = 30 + 22 * Math.max(1, names.length);
  const c = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img" });
  svg("title", {}, c).textContent = "Cooldowns and open circuits over the window";
  const x = (t) => L + (W - L - R) * (Math.min(h.end, Math.max(h.start, t)) - h.start) / (h.end - h.start);
  for (let k = 0; k <= 6; k++) {
    const t = h.start + (h.end - h.start) * k / 6;
    svg("line", { x1: x(t), x2: x(t), y1: 4, y2: H - 18, stroke: "#eef" }, c);
    svg("text", { x: x(t), y: H - 4, "text-anchor": k === 6 ? "end" : "middle" }, c).textContent = clock(t);
  }
  if (!names.length) svg("text", { x: L, y: 22 }, c).textContent = "none in this window";
  names.forEach((name, i) => {
    const y = 8 + 22 * i;
    svg("text", { x: L - 8, y: y + 12, "text-anchor": "end" }, c).textContent = name;
    for (const p of rows[name]) {
      const r = svg("rect", { x: x(p.start), y, width: Math.max(2, x(p.until) - x(p.start)), height: 16,
                              rx: 2,
                              fill: p.kind === "cooldown" ? "#e3a21a" : "#b3261e", "data-kind": p.kind }, c);
      svg("title", {}, r).textContent = name + ": " + clock(p.start) + " – " + clock(p.until) + " (" +
        dur(p.until - p.start) + ")";
    }
  });
  const wrap = el("div", null, "chart");
  wrap.appendChild(c);
  $("#kp-periods").replaceChildren(wrap);
  const tbody = $("#kp-period-table tbody");
  tbody.replaceChildren();
  for (const p of h.periods.slice().sort((a, b) => b.start - a.start)) {
    const tr = document.createElement("tr");
    cell(tr, p.kind === "cooldown" ? "cooldown" : "circuit open");
    cell(tr, p.model || "—");
    cell(tr, clock(p.start));
    cell(tr, clock(p.until) + (p.until > Date.now() / 1000 ? " (ongoing)" : ""));
    cell(tr, dur(p.until - p.start), "num");
    tbody.appendChild(tr);
  }
}

async function loadHistory() {
  const [win, step] = $("#kp-window").value.split("|");
  const model = $("#kp-model").value;
  const h = await api("GET", "/keys/" + encodeURIComponent(kid) + "/history?window=" + win + "&step=" + step +
                      (model ? "&model=" + encodeURIComponent(model) : ""));
  const times = h.points.map((p) => p.t);
  const t = h.totals, box = $("#kp-totals");
  box.replaceChildren();
  pill(box, t.requests.toLocaleString() + " requests");
  pill(box, t.ok.toLocaleString() + " ok", "ok");
  for (const [o, n] of Object.entries(t.errors)) if (n) pill(box, n + " " + o, "bad");
  pill(box, t.http_429 + " × HTTP 429", t.http_429 ? "warn" : "");
  pill(box, t.tokens.toLocaleString() + " tokens");
  if (t.latency_ms.p50 !== null) {
    pill(box, "latency p50 " + t.latency_ms.p50 + " ms · p95 " + t.latency_ms.p95 + " ms");
  }
  const outcomes = ["ok", "quota", "auth", "transient", "client"];
  $("#kp-requests").replaceChildren(timeChart(times, outcomes.map((o) => ({
    name: o, color: OUTCOME_COLORS[o], kind: "bar",
    values: h.points.map((p) => o === "ok" ? p.ok : p.errors[o]) })), {
    title: "Requests per " + step + " by outcome" }));
  $("#kp-latency").replaceChildren(timeChart(times, [
    { name: "p50", color: "#1f77b4", values: h.points.map((p) => p.latency_ms.p50) },
    { name: "p95", color: "#d62728", values: h.points.map((p) => p.latency_ms.p95) }], {
    title: "Latency p50 / p95 (ms)", height: 170 }));
  drawPeriods(h);
  $("#kp-status").textContent = "updated " + clock(Date.now() / 1000) + " · buckets of " + step +
    " from the " + (h.resolution_s === 60 ? "minute" : "hour") + " rollups";
}

async function showKey(arg) {
  if (!token()) { $("#kp-status").textContent = "Enter the admin token."; return; }
  if (arg !== kid) { kid = arg; $("#kp-model").value = ""; }
  try {
    await loadKey();
    await loadModels();
    await loadHistory();
  } catch (e) {
    $("#kp-status").textContent = e.message;
  }
}
$("#kp-window").addEventListener("change", () => loadHistory().catch((e) => notify(e.message, "bad")));
$("#kp-model").addEventListener("change", () => loadHistory().catch((e) => notify(e.message, "bad")));
registerTab("key", {
  show: showKey,
  poll: () => {
    if (!kid || !token()) return;
    loadKey().catch(() => {});
    if (++ticks % 5 === 0) loadHistory().catch(() => {});  // history every 10 s
  },
});
"""

TAB = Tab("keys", "Keys", BODY, SCRIPT, STYLE)
KEY_PAGE = Tab("key", "Key", PAGE_BODY, PAGE_SCRIPT, nav=False)
