"""GET /admin: the operator dashboard, one server-rendered page with a little vanilla JS (no build step).

The page itself carries no data and needs no token; its script asks for the admin token (kept in
sessionStorage), polls GET /admin/api/keys every 2 s and calls the enable/disable/reset actions.
Every value is inserted with textContent, never as HTML.
"""
from __future__ import annotations

import secrets
from html import escape

from flask import Blueprint, Response, current_app

from proxy import __version__

bp = Blueprint("admin_dashboard", __name__)

POLL_MS = 2000

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keyrelay admin</title>
<style nonce="{nonce}">
  body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #f7f8fa; }}
  h1 {{ font-size: 1.3rem; margin: 0 0 .2rem; }}
  .meta {{ color: #667; margin-bottom: 1rem; }}
  form, .bar {{ display: flex; gap: .5rem; align-items: center; margin-bottom: .8rem; flex-wrap: wrap; }}
  input {{ padding: .3rem .5rem; border: 1px solid #bbc; border-radius: 4px; }}
  button {{ padding: .25rem .7rem; border: 1px solid #889; border-radius: 4px; background: #fff; }}
  button:hover {{ background: #eef; }} td button + button {{ margin-left: .3rem; }}
  table {{ border-collapse: collapse; width: 100%; background: #fff; }}
  th, td {{ border-bottom: 1px solid #e2e4ea; padding: .35rem .5rem; text-align: left; vertical-align: top; }}
  th {{ background: #eceff4; font-weight: 600; }}
  td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
  .ok {{ color: #176c2e; }} .bad {{ color: #b3261e; font-weight: 600; }} .warn {{ color: #9a6700; }}
  .err {{ color: #b3261e; max-width: 22rem; overflow-wrap: anywhere; }}
  #status {{ min-height: 1.2em; }}
  code {{ font-size: 13px; }}
</style>
</head>
<body>
<h1>keyrelay admin</h1>
<div class="meta">version {version} · config <code>{source}</code> · refreshes every {poll_s:g} s</div>
<form id="login">
  <label for="token">Admin token</label>
  <input id="token" type="password" autocomplete="off" size="36" placeholder="server.admin_token">
  <button id="save" type="submit">Use token</button>
  <button id="forget" type="button">Forget</button>
</form>
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
<script nonce="{nonce}">
"use strict";
const STORE = "keyrelay-admin-token";
const $ = (sel) => document.querySelector(sel);
const status = (text, cls) => {{ const s = $("#status"); s.textContent = text; s.className = cls || ""; }};
const token = () => sessionStorage.getItem(STORE) || "";

async function api(method, path, body) {{
  const headers = {{ "Authorization": "Bearer " + token() }};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch("/admin/api" + path, {{
    method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" }});
  const data = await resp.json().catch(() => ({{}}));
  if (!resp.ok) throw new Error((data.error && data.error.message) || ("HTTP " + resp.status));
  return data;
}}

function cell(tr, text, cls) {{
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}}

function button(td, label, action, id) {{
  const b = document.createElement("button");
  b.type = "button"; b.textContent = label; b.dataset.action = action; b.dataset.key = id;
  b.addEventListener("click", () => act(action, id));
  td.appendChild(b);
}}

function render(keys) {{
  const tbody = $("#keys tbody");
  tbody.replaceChildren();
  for (const k of keys) {{
    const tr = document.createElement("tr");
    tr.dataset.keyId = k.id;
    cell(tr, "").appendChild(Object.assign(document.createElement("code"), {{ textContent: k.id }}));
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
    cell(tr, Object.entries(k.cooldowns || {{}}).map(([m, s]) => m + ": " + s + " s").join(", "));
    cell(tr, k.requests, "num");
    cell(tr, k.errors, "num");
    cell(tr, k.last_error, "err");
    const actions = cell(tr, "");
    if (k.enabled) button(actions, "Disable", "disable", k.id);
    else button(actions, "Enable", "enable", k.id);
    button(actions, "Reset", "reset", k.id);
    tbody.appendChild(tr);
  }}
}}

async function refresh() {{
  if (!token()) {{ status("Enter the admin token to see the keys.", "warn"); return; }}
  try {{
    const data = await api("GET", "/keys");
    render(data.keys);
    status("Updated " + new Date().toLocaleTimeString() + " · " + data.keys.length + " key(s)", "ok");
  }} catch (e) {{
    status(e.message, "bad");
  }}
}}

async function act(action, id) {{
  try {{
    const body = action === "disable" ? {{ reason: $("#reason").value }} : undefined;
    await api("POST", "/keys/" + encodeURIComponent(id) + "/" + action, body);
    status(action + " " + id + ": done", "ok");
  }} catch (e) {{
    status(action + " " + id + " failed: " + e.message, "bad");
  }}
  refresh();
}}

$("#login").addEventListener("submit", (ev) => {{
  ev.preventDefault();
  sessionStorage.setItem(STORE, $("#token").value.trim());
  $("#token").value = "";
  refresh();
}});
$("#forget").addEventListener("click", () => {{
  sessionStorage.removeItem(STORE); $("#keys tbody").replaceChildren(); refresh();
}});
refresh();
setInterval(refresh, {poll_ms});
</script>
</body>
</html>
"""


def render_page(source: str, nonce: str) -> str:
    return PAGE.format(nonce=nonce, version=escape(__version__), source=escape(source),
                       poll_s=POLL_MS / 1000, poll_ms=POLL_MS)


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
