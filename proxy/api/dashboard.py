"""GET /admin: the operator dashboard, one server-rendered page with a little vanilla JS (no build step).

The page itself carries no data and needs no token; its script asks for the admin token (kept in
sessionStorage) and polls the admin API:

- Keys: ``GET /admin/api/keys`` every 2 s, with the enable / disable / reset actions.
- Clients: ``GET /admin/api/clients`` every 2 s; create (the new key is shown once, in a box that forgets it
  when dismissed; it is never stored), revoke, rotate (runtime clients only: config clients belong to the
  YAML); limits and spend this month (``GET /admin/api/usage?group_by=client&from=<month start>``).
- Usage: requests, tokens or cost per day per client over the last 14 days, an SVG line chart drawn with
  ``createElementNS`` and the same numbers as a table (``GET /admin/api/usage?group_by=day&client=<id>``,
  every 10 s). While the usage report answers 404 the panels say "usage not available" and stop asking.
- Traffic: the inspector's captures, one transaction with its timing bar and bodies (``dashboard_traffic``).

Every value is inserted with textContent or as an SVG attribute, never as HTML; the CSP allows only this
page's nonce (no inline handlers, no eval, nothing external).
"""
from __future__ import annotations

import secrets
from html import escape

from flask import Blueprint, Response, current_app

from proxy import __version__
from proxy.api import dashboard_traffic as traffic

bp = Blueprint("admin_dashboard", __name__)

POLL_MS = 2000
USAGE_POLL_MS = 10_000
USAGE_DAYS = 14

STYLE = """
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #f7f8fa; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
  .meta, .muted { color: #667; }
  .meta { margin-bottom: 1rem; }
  form, .bar { display: flex; gap: .5rem; align-items: center; margin-bottom: .8rem; flex-wrap: wrap; }
  input, select { padding: .3rem .5rem; border: 1px solid #bbc; border-radius: 4px; }
  input[type=number] { width: 6.5rem; }
  button { padding: .25rem .7rem; border: 1px solid #889; border-radius: 4px; background: #fff; }
  button:hover { background: #eef; } td button + button { margin-left: .3rem; }
  button.danger { border-color: #b3261e; color: #b3261e; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  caption { text-align: left; padding: .3rem 0; color: #445; }
  th, td { border-bottom: 1px solid #e2e4ea; padding: .35rem .5rem; text-align: left; vertical-align: top; }
  th { background: #eceff4; font-weight: 600; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .ok { color: #176c2e; } .bad { color: #b3261e; font-weight: 600; } .warn { color: #9a6700; }
  .err { color: #b3261e; max-width: 22rem; overflow-wrap: anywhere; }
  #status, #clients-status, #clients-action, #usage-status { min-height: 1.2em; margin-bottom: .4rem; }
  code { font-size: 13px; }
  #clients code { white-space: nowrap; }
  #newkey { border: 2px solid #9a6700; background: #fff8e1; padding: .7rem 1rem; margin: .6rem 0;
            border-radius: 6px; }
  #newkey strong { display: block; margin-bottom: .4rem; }
  #newkey code { display: inline-block; font-size: 15px; padding: .2rem .4rem; background: #fff;
                 border: 1px solid #ddc; user-select: all; overflow-wrap: anywhere; }
  #newkey .bar { margin: .5rem 0 0; }
  .legend { display: flex; gap: 1rem; flex-wrap: wrap; list-style: none; padding: 0; margin: .4rem 0; }
  .swatch { display: inline-block; width: .9rem; height: .9rem; border-radius: 2px; margin-right: .3rem;
            vertical-align: -2px; }
  #chart svg { background: #fff; border: 1px solid #e2e4ea; max-width: 100%; height: auto; }
  #chart text { font: 11px system-ui, sans-serif; fill: #556; }
"""

BODY = """
<h1>keyrelay admin</h1>
<div class="meta">version {version} · config <code>{source}</code> · refreshes every {poll_s:g} s</div>
<form id="login">
  <label for="token">Admin token</label>
  <input id="token" type="password" autocomplete="off" size="36" placeholder="server.admin_token">
  <button id="save" type="submit">Use token</button>
  <button id="forget" type="button">Forget</button>
</form>

<h2>Keys</h2>
<div class="bar">
  <label for="reason">Reason for disabling</label>
  <input id="reason" type="text" size="36" maxlength="200" placeholder="optional">
</div>
<div id="status" role="status"></div>
<table id="keys">
  <thead><tr>
    <th>Key</th><th>Provider</th><th>Label</th><th>Hint</th><th>Enabled</th><th>Status</th>
    <th>Weight</th><th>Health</th><th>Circuit</th><th>Cooldowns</th><th>Requests</th><th>Errors</th>
    <th>Last error</th><th>Actions</th>
  </tr></thead>
  <tbody></tbody>
</table>

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
<table id="clients">
  <thead><tr>
    <th>Name</th><th>Team</th><th>State</th><th>Key</th><th>Models</th><th>Limits</th>
    <th class="num">Spend this month</th><th>Last used</th><th>Actions</th>
  </tr></thead>
  <tbody></tbody>
</table>

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
"use strict";
const STORE = "keyrelay-admin-token";
const CFG = document.body.dataset;
const POLL_MS = Number(CFG.pollMs), USAGE_POLL_MS = Number(CFG.usagePollMs), DAYS = Number(CFG.usageDays);
const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2",
                "#bcbd22", "#393b79", "#637939", "#7f7f7f"];
const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
const say = (sel, text, cls) => { const s = $(sel); s.textContent = text; s.className = cls || ""; };
const status = (text, cls) => say("#status", text, cls);
const token = () => sessionStorage.getItem(STORE) || "";

async function api(method, path, body) {
  const headers = { "Authorization": "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch("/admin/api" + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((data.error && data.error.message) || ("HTTP " + resp.status));
    err.status = resp.status;
    err.code = data.error && data.error.code;
    throw err;
  }
  return data;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== null && text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function cell(tr, text, cls) {
  const td = el("td", text, cls);
  tr.appendChild(td);
  return td;
}

function svg(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (parent) parent.appendChild(e);
  return e;
}

// ------------------------------------------------------------------------------------------ keys

function button(td, label, action, id) {
  const b = el("button", label);
  b.type = "button"; b.dataset.action = action; b.dataset.key = id;
  b.addEventListener("click", () => act(action, id));
  td.appendChild(b);
}

function render(keys) {
  const tbody = $("#keys tbody");
  tbody.replaceChildren();
  for (const k of keys) {
    const tr = document.createElement("tr");
    tr.dataset.keyId = k.id;
    cell(tr, "").appendChild(el("code", k.id));
    cell(tr, k.provider);
    cell(tr, k.label);
    cell(tr, k.hint);
    cell(tr, k.enabled ? "yes" : "no" + (k.disabled_reason ? " (" + k.disabled_reason + ")" : ""),
         k.enabled ? "ok enabled" : "bad enabled");
    cell(tr, k.status + (k.status_reason ? ": " + k.status_reason : ""), k.status === "ok" ? "ok" : "bad");
    cell(tr, k.weight, "num");
    cell(tr, Number(k.health).toFixed(2), "num " + (k.health < 0.5 ? "warn" : ""));
    cell(tr, k.circuit + (k.circuit_seconds_left ? " (" + k.circuit_seconds_left + " s)" : ""),
         k.circuit === "closed" ? "ok" : "warn");
    cell(tr, Object.entries(k.cooldowns || {}).map(([m, s]) => m + ": " + s + " s").join(", "));
    cell(tr, k.requests, "num");
    cell(tr, k.errors, "num");
    cell(tr, k.last_error, "err");
    const actions = cell(tr, "");
    if (k.enabled) button(actions, "Disable", "disable", k.id);
    else button(actions, "Enable", "enable", k.id);
    button(actions, "Reset", "reset", k.id);
    tbody.appendChild(tr);
  }
}

async function refreshKeys() {
  if (!token()) { status("Enter the admin token to see the keys.", "warn"); return; }
  try {
    const data = await api("GET", "/keys");
    render(data.keys);
    status("Updated " + new Date().toLocaleTimeString() + " · " + data.keys.length + " key(s)", "ok");
  } catch (e) {
    status(e.message, "bad");
  }
}

async function act(action, id) {
  try {
    const body = action === "disable" ? { reason: $("#reason").value } : undefined;
    await api("POST", "/keys/" + encodeURIComponent(id) + "/" + action, body);
    status(action + " " + id + ": done", "ok");
  } catch (e) {
    status(action + " " + id + " failed: " + e.message, "bad");
  }
  refreshKeys();
}

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

// ------------------------------------------------------------------------------------------ wiring

function refresh() { refreshKeys(); refreshClients(); }

$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(STORE, $("#token").value.trim());
  $("#token").value = "";
  usageAvailable = true;
  refreshKeys();
  refreshClients().then(refreshUsage);
});
$("#forget").addEventListener("click", () => {
  sessionStorage.removeItem(STORE);
  $("#keys tbody").replaceChildren(); $("#clients tbody").replaceChildren();
  clients = []; clientsShown = ""; series = null;
  refresh();
});
$("#create-client").addEventListener("submit", createClient);
$("#newkey-copy").addEventListener("click", copyKey);
$("#newkey-dismiss").addEventListener("click", dismissKey);
$("#metric").addEventListener("change", () => drawUsage(lastDays()));
refreshKeys();
refreshClients().then(refreshUsage);
setInterval(refresh, POLL_MS);
setInterval(refreshUsage, USAGE_POLL_MS);
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keyrelay admin</title>
<style nonce="{nonce}">{style}</style>
</head>
<body data-poll-ms="{poll_ms}" data-usage-poll-ms="{usage_poll_ms}" data-usage-days="{days}">
{body}
<script nonce="{nonce}">{script}</script>
</body>
</html>
"""


def render_page(source: str, nonce: str) -> str:
    body = BODY.format(version=escape(__version__), source=escape(source), poll_s=POLL_MS / 1000,
                       usage_poll_s=USAGE_POLL_MS / 1000, days=USAGE_DAYS)
    return PAGE.format(nonce=nonce, style=STYLE + traffic.STYLE, body=body + traffic.BODY,
                       script=SCRIPT + traffic.SCRIPT, poll_ms=POLL_MS,
                       usage_poll_ms=USAGE_POLL_MS, days=USAGE_DAYS)


@bp.get("")
def page() -> Response:
    nonce = secrets.token_urlsafe(16)
    source = current_app.extensions["keyrelay"].config.source
    resp = Response(render_page(source, nonce), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp
