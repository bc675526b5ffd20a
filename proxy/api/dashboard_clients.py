"""The Clients tab of /admin: client keys (create, revoke, rotate), their limits and spend, usage per day.

- Clients: ``GET /admin/api/clients`` every 2 s while the tab is shown; create (the new key is shown
  once, in a box that forgets it when dismissed; it is never stored), revoke, rotate (runtime clients
  only: config clients belong to the YAML); limits and spend this month
  (``GET /admin/api/usage?group_by=client&from=<month start>``).
- Usage: requests, tokens or cost per day per client over the last 14 days, an SVG line chart drawn with
  ``createElementNS`` and the same numbers as a table (``GET /admin/api/usage?group_by=day&client=<id>``,
  every 10 s). While the usage report answers 404 the panels say "usage not available" and stop asking.
"""
from __future__ import annotations

from proxy.api.dashboard_tab import Tab

USAGE_POLL_MS = 10_000
USAGE_DAYS = 14

STYLE = """
  #clients-status, #clients-action, #usage-status { min-height: 1.2em; margin-bottom: .4rem; }
  #clients code { white-space: nowrap; }
  #newkey { border: 2px solid #9a6700; background: #fff8e1; padding: .7rem 1rem; margin: .6rem 0;
            border-radius: 6px; }
  #newkey strong { display: block; margin-bottom: .4rem; }
  #newkey code { display: inline-block; font-size: 15px; padding: .2rem .4rem; background: #fff;
                 border: 1px solid #ddc; user-select: all; overflow-wrap: anywhere; }
  #newkey .bar { margin: .5rem 0 0; }
  #chart svg { background: #fff; border: 1px solid #e2e4ea; max-width: 100%; height: auto; }
  #chart text { font: 11px system-ui, sans-serif; fill: #556; }
"""

BODY = """
<h2>Clients</h2>
<form id="create-client" autocomplete="off">
  <label for="c-name">Name</label><input id="c-name" required maxlength="64" size="16">
  <label for="c-team">Team</label><input id="c-team" maxlength="64" size="12">
  <label for="c-models">Models</label>
  <input id="c-models" size="20" placeholder="comma-separated; empty = all">
  <label for="c-rpm">RPM</label><input id="c-rpm" type="number" min="1" step="1">
  <label for="c-tpm">TPM</label><input id="c-tpm" type="number" min="1" step="1">
  <label for="c-conc">Max concurrent</label><input id="c-conc" type="number" min="1" step="1">
  <label for="c-budget">Budget USD</label><input id="c-budget" type="number" min="0" step="any">
  <label for="c-period">per</label>
  <select id="c-period"><option>day</option><option>week</option><option selected>month</option></select>
  <button id="c-create" type="submit">Create client</button>
</form>
<section id="newkey" hidden role="alert" aria-live="assertive">
  <strong id="newkey-title">New client key — shown only this once: store it now</strong>
  <code id="newkey-value"></code>
  <div class="bar">
    <button id="newkey-copy" type="button">Copy</button>
    <button id="newkey-dismiss" type="button">I have stored it</button>
    <span id="newkey-note" class="muted"></span>
  </div>
</section>
<div class="bar">
  <label for="grace">Rotation grace (s)</label>
  <input id="grace" type="number" min="0" max="2592000" step="1" value="0">
  <span class="muted">how long the previous key keeps working after Rotate</span>
</div>
<div id="clients-status" role="status"></div>
<div id="clients-action" role="status"></div>
<div class="table-wrap"><table id="clients">
  <thead><tr>
    <th>Name</th><th>Team</th><th>State</th><th>Key</th><th>Models</th><th>Limits</th>
    <th class="num">Spend this month</th><th>Last used</th><th>Actions</th>
  </tr></thead>
  <tbody></tbody>
</table></div>

<h2>Usage</h2>
<div class="bar">
  <label for="metric">Per day, last {days} days (UTC):</label>
  <select id="metric">
    <option value="requests">requests</option>
    <option value="tokens">tokens (prompt + completion)</option>
    <option value="cost">cost (USD)</option>
  </select>
  <span class="muted">refreshes every {usage_poll_s:g} s</span>
</div>
<div id="usage-status" role="status"></div>
<div id="chart"></div>
<ul id="legend" class="legend"></ul>
<table id="usage-table">
  <caption></caption>
  <thead><tr></tr></thead>
  <tbody></tbody>
</table>
"""

SCRIPT = r"""
const USAGE_POLL_MS = {usage_poll_ms}, DAYS = {days};
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
                "#bcbd22", "#393b79", "#637939", "#7f7f7f"];
// ------------------------------------------------------------------------------------------ clients

let clients = [];           // the last GET /admin/api/clients
let spend = null;           // client id -> usage row this month; null: not loaded; "unavailable": 404
let usageAvailable = true;  // false after the usage report answered 404 (asked again on "Use token")
let clientsShown = "";      // what the table shows, to leave it alone when nothing changed

const money = (v) => "$" + (v < 0.01 && v > 0 ? v.toPrecision(2) : v.toFixed(2));
const compact = (n) => n >= 1e6 ? (n / 1e6).toFixed(n % 1e6 ? 1 : 0) + "M"
  : n >= 1e3 ? (n / 1e3).toFixed(n % 1e3 ? 1 : 0) + "k" : String(n);

function costText(row) {
  if (!row) return money(0);
  if (row.cost_usd === null || row.cost_usd === undefined) return "unpriced";
  if (row.unpriced_requests > 0) return money(row.cost_usd) + " + unpriced";
  return money(row.cost_usd);
}

function limitsText(c) {
  const parts = [];
  if (c.rpm) parts.push("rpm " + compact(c.rpm));
  if (c.tpm) parts.push("tpm " + compact(c.tpm));
  if (c.max_concurrent) parts.push("concurrent " + c.max_concurrent);
  for (const [glob, lim] of Object.entries(c.model_limits || {})) {
    parts.push(glob + ": " + Object.entries(lim).map(([k, v]) => k + " " + compact(v)).join(" "));
  }
  const budget = c.budget_usd !== null && c.budget_usd !== undefined;
  if (budget) parts.push(money(c.budget_usd) + "/" + c.budget_period);
  if (c.token_quota) parts.push(compact(c.token_quota) + " tokens/" + c.quota_period);
  if (c.expires_at) parts.push("expires " + c.expires_at);
  return parts.length ? parts.join(" · ") : "none";
}

function stateOf(c) {
  if (c.revoked) return ["revoked", "bad"];
  if (!c.enabled) return ["disabled", "bad"];
  if (c.expires_at && Date.parse(c.expires_at) <= Date.now()) return ["expired", "bad"];
  return ["active", "ok"];
}

function spendText(c) {
  if (spend === "unavailable") return ["usage not available", "muted"];
  if (spend === null) return ["…", "muted"];
  const row = spend[c.id];
  let text = costText(row);
  if (c.budget_usd !== null && c.budget_usd !== undefined && c.budget_period === "month") {
    text += " of " + money(c.budget_usd);
  }
  return [text + (row ? " · " + row.requests + " req" : ""), row && row.unpriced_requests > 0 ? "warn" : ""];
}

function clientButton(td, label, action, c, cls) {
  const b = el("button", label, cls);
  b.type = "button"; b.dataset.action = action; b.dataset.client = c.id;
  b.addEventListener("click", () => clientAction(action, c));
  td.appendChild(b);
}

function renderClients() {
  const shown = JSON.stringify([clients, spend]);
  if (shown === clientsShown) return;
  clientsShown = shown;
  const tbody = $("#clients tbody");
  tbody.replaceChildren();
  for (const c of clients) {
    const tr = document.createElement("tr");
    tr.dataset.clientId = c.id;
    const name = cell(tr, "", "name");
    name.appendChild(el("div", c.name));
    name.appendChild(el("code", c.id, "muted"));
    cell(tr, c.team, "team");
    const [state, cls] = stateOf(c);
    cell(tr, state, cls + " state");
    cell(tr, "").appendChild(el("code", c.key_hint));
    cell(tr, c.models.length ? c.models.join(", ") : "all", "models");
    cell(tr, limitsText(c), "limits");
    const [text, scls] = spendText(c);
    cell(tr, text, "num spend " + scls);
    cell(tr, c.last_used_at || "never", "muted");
    const actions = cell(tr, "", "actions");
    if (c.source === "config") actions.appendChild(el("span", "from config", "muted"));
    else if (c.revoked) actions.appendChild(el("span", "revoked " + (c.revoked_at || ""), "muted"));
    else {
      clientButton(actions, "Rotate", "rotate", c);
      clientButton(actions, "Revoke", "revoke", c, "danger");
    }
    tbody.appendChild(tr);
  }
}

async function refreshClients() {
  if (!token()) { say("#clients-status", "Enter the admin token to see the clients.", "warn"); return; }
  try {
    clients = (await api("GET", "/clients")).clients;
    renderClients();
    say("#clients-status", clients.length + " client(s)", "ok");
  } catch (e) {
    say("#clients-status", e.message, "bad");
  }
}

// the new key: held by the box only, never stored, gone from the page once dismissed
function showKey(title, key) {
  $("#newkey-title").textContent = title + " — shown only this once: store it now";
  $("#newkey-value").textContent = key;
  $("#newkey-note").textContent = "";
  $("#newkey").hidden = false;
}

function dismissKey() {
  $("#newkey-value").textContent = "";
  $("#newkey-note").textContent = "";
  $("#newkey").hidden = true;
}

async function copyKey() {
  const key = $("#newkey-value").textContent;
  try {
    await navigator.clipboard.writeText(key);
    $("#newkey-note").textContent = "copied";
  } catch (e) {  // no clipboard permission: select it for Ctrl+C
    const range = document.createRange();
    range.selectNodeContents($("#newkey-value"));
    const sel = window.getSelection(); sel.removeAllRanges(); sel.addRange(range);
    $("#newkey-note").textContent = "selected: press Ctrl+C";
  }
}

function numberField(sel, name, body) {
  const v = $(sel).value.trim();
  if (v !== "") body[name] = Number(v);
}

async function createClient(ev) {
  ev.preventDefault();
  const body = { name: $("#c-name").value.trim() };
  const team = $("#c-team").value.trim();
  if (team) body.team = team;
  const models = $("#c-models").value.split(",").map((m) => m.trim()).filter((m) => m);
  if (models.length) body.models = models;
  numberField("#c-rpm", "rpm", body);
  numberField("#c-tpm", "tpm", body);
  numberField("#c-conc", "max_concurrent", body);
  numberField("#c-budget", "budget_usd", body);
  if (body.budget_usd !== undefined) body.budget_period = $("#c-period").value;
  try {
    const data = await api("POST", "/clients", body);
    $("#create-client").reset();
    showKey("New key for " + data.client.name, data.key);
    say("#clients-action", "created " + data.client.name + " (" + data.client.id + ")", "ok");
  } catch (e) {
    say("#clients-action", "create failed: " + e.message, "bad");
  }
  refreshClients();
}

async function clientAction(action, c) {
  try {
    if (action === "revoke") {
      if (!window.confirm("Revoke " + c.name + "? Its keys stop working at once; this is final.")) return;
      await api("POST", "/clients/" + encodeURIComponent(c.id) + "/revoke", {});
      say("#clients-action", "revoked " + c.name, "ok");
    } else if (action === "rotate") {
      const grace = Number($("#grace").value || 0);
      const data = await api("POST", "/clients/" + encodeURIComponent(c.id) + "/rotate", { grace_s: grace });
      showKey("New key for " + data.client.name + " (the previous one works " + grace + " s more)", data.key);
      say("#clients-action", "rotated " + c.name, "ok");
    }
  } catch (e) {
    say("#clients-action", action + " " + c.name + " failed: " + e.message, "bad");
  }
  refreshClients();
}

// ------------------------------------------------------------------------------------------ usage

const dayOf = (t) => new Date(t).toISOString().slice(0, 10);
const monthStart = () => dayOf(Date.now()).slice(0, 8) + "01";
const lastDays = () => Array.from({ length: DAYS }, (_, i) => dayOf(Date.now() - (DAYS - 1 - i) * 86400000));
const METRICS = {
  requests: { label: "Requests", value: (r) => r.requests, text: String },
  tokens: { label: "Tokens (prompt + completion)", value: (r) => r.prompt_tokens + r.completion_tokens,
            text: String },
  cost: { label: "Cost (USD)", value: (r) => r.cost_usd || 0, text: (v, r) => costText(r) },
};
let series = null;  // [{client, rows: {day: row}}] for the last DAYS days

function unavailable() {
  usageAvailable = false;
  spend = "unavailable";
  series = null;
  renderClients();
  $("#chart").replaceChildren();
  $("#legend").replaceChildren();
  $("#usage-table caption").textContent = "";
  $("#usage-table thead tr").replaceChildren();
  $("#usage-table tbody").replaceChildren();
  say("#usage-status", "usage not available (this gateway has no usage report)", "muted");
}

async function refreshUsage() {
  if (!token() || !usageAvailable) return;
  const days = lastDays();
  try {
    const month = await api("GET", "/usage?group_by=client&from=" + monthStart());
    spend = {};
    for (const row of month.rows) spend[row.client_id || row.client] = row;  // client_id: docs/usage.md
    renderClients();
    const shown = clients.slice();
    const answers = await Promise.all(shown.map((c) => api("GET", "/usage?group_by=day&client="
      + encodeURIComponent(c.id) + "&from=" + days[0])));
    series = shown.map((c, i) => {
      const rows = {};
      for (const row of answers[i].rows) rows[row.day] = row;
      return { client: c, rows };
    });
    drawUsage(days);
    say("#usage-status", "Updated " + new Date().toLocaleTimeString(), "ok");
  } catch (e) {
    if (e.status === 404 && e.code !== "client_not_found") unavailable();
    else say("#usage-status", "usage: " + e.message, "bad");
  }
}

function drawUsage(days) {
  if (!series) return;
  const metric = METRICS[$("#metric").value];
  const W = 760, H = 260, L = 56, R = 24, T = 12, B = 34;
  const values = series.map((s) => days.map((d) => s.rows[d] ? metric.value(s.rows[d]) : 0));
  const max = Math.max(0, ...values.flat());
  const top = max > 0 ? max * 1.1 : 1;
  const x = (i) => L + (days.length > 1 ? i * (W - L - R) / (days.length - 1) : 0);
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const fmt = (v) => $("#metric").value === "cost" ? money(v) : compact(Math.round(v));

  const chart = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img",
                             "aria-labelledby": "chart-title" });
  svg("title", { id: "chart-title" }, chart).textContent = metric.label + " per day per client";
  for (let k = 0; k <= 4; k++) {
    const v = top * k / 4;
    svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e2e4ea" }, chart);
    svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, chart).textContent = fmt(v);
  }
  days.forEach((d, i) => {
    if (i % 2 === (days.length - 1) % 2) {
      svg("text", { x: x(i), y: H - B + 16, "text-anchor": "middle" }, chart).textContent = d.slice(5);
    }
  });
  const legend = $("#legend");
  legend.replaceChildren();
  series.forEach((s, n) => {
    const color = COLORS[n % COLORS.length];
    const g = svg("g", { class: "series", "data-client": s.client.id }, chart);
    svg("polyline", { points: values[n].map((v, i) => x(i) + "," + y(v)).join(" "), fill: "none",
                      stroke: color, "stroke-width": 2 }, g);
    values[n].forEach((v, i) => {
      const dot = svg("circle", { cx: x(i), cy: y(v), r: 3, fill: color, "data-day": days[i],
                                  "data-value": v }, g);
      svg("title", {}, dot).textContent = s.client.name + " " + days[i] + ": " + fmt(v);
    });
    const li = el("li", null);
    const sw = el("span", null, "swatch");
    sw.style.background = color;
    li.append(sw, document.createTextNode(s.client.name));
    legend.appendChild(li);
  });
  $("#chart").replaceChildren(chart);

  // the same numbers as a table: one row per day, one column per client
  $("#usage-table caption").textContent = metric.label + " per day per client (UTC)";
  const head = $("#usage-table thead tr");
  head.replaceChildren(el("th", "Day"));
  for (const s of series) head.appendChild(el("th", s.client.name, "num"));
  const tbody = $("#usage-table tbody");
  tbody.replaceChildren();
  for (const d of days.slice().reverse()) {
    const tr = document.createElement("tr");
    tr.dataset.day = d;
    cell(tr, d);
    for (const s of series) {
      const row = s.rows[d];
      cell(tr, row ? metric.text(metric.value(row), row) : (metric === METRICS.cost ? money(0) : "0"), "num");
    }
    tbody.appendChild(tr);
  }
}


const visible = () => current === "clients";
$("#create-client").addEventListener("submit", createClient);
$("#newkey-copy").addEventListener("click", copyKey);
$("#newkey-dismiss").addEventListener("click", dismissKey);
$("#metric").addEventListener("change", () => drawUsage(lastDays()));
setInterval(() => { if (visible()) refreshUsage(); }, USAGE_POLL_MS);
registerTab("clients", {
  show: () => { refreshClients().then(refreshUsage); },
  poll: refreshClients,
  login: () => { usageAvailable = true; },
  forget: () => { $("#clients tbody").replaceChildren(); clients = []; clientsShown = ""; series = null; },
});
"""

TAB = Tab("clients", "Clients", BODY.format(days=USAGE_DAYS, usage_poll_s=USAGE_POLL_MS / 1000),
          SCRIPT.replace("{usage_poll_ms}", str(USAGE_POLL_MS)).replace("{days}", str(USAGE_DAYS)), STYLE)
