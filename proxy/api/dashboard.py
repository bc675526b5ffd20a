"""GET /admin: the operator dashboard, one server-rendered page with a little vanilla JS (no build step).

The page is a shell (header, token form, messages, tab bar) plus the tabs listed in ``TABS``: each
``Tab`` brings its HTML, its script and its style, and registers itself in the page's script with
``registerTab(id, {show, poll})`` (``dashboard_tab.Tab``). The shell routes ``#<tab>`` /
``#<tab>/<arg>`` (e.g. ``#key/k_…``) to the tab, calls its ``poll`` every ``POLL_MS`` while it is
shown, and keeps action messages until they are dismissed (``notify``), so a refresh never overwrites
them. To add a tab: write a module with a
``TAB = Tab(...)`` (see ``dashboard_audit.py``) and add it to ``TABS``.

The page itself carries no data and needs no token; its script asks for the admin token (kept in
sessionStorage) and calls the admin API. Every value is inserted with textContent or as an SVG
attribute, never as HTML; the CSP allows only this page's nonce (no inline handlers, no eval, nothing
external: charts are inline SVG drawn by the shell's ``chart`` helpers).
"""
from __future__ import annotations

import secrets
from html import escape

from flask import Blueprint, Response, current_app

from proxy import __version__
from proxy.api import dashboard_audit, dashboard_catalog, dashboard_clients, dashboard_keys, dashboard_traffic
from proxy.api.dashboard_tab import Tab

bp = Blueprint("admin_dashboard", __name__)

POLL_MS = 2000


STYLE = """
  * { box-sizing: border-box; }
  [hidden] { display: none !important; }
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f7f8fa;
         min-width: 780px; }
  header { padding: 1rem 1.5rem .4rem; background: #fff; border-bottom: 1px solid #e2e4ea; }
  main { padding: .6rem 1.5rem 2rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  h2 { font-size: 1.1rem; margin: 1.2rem 0 .5rem; }
  h3 { font-size: 1rem; margin: 1rem 0 .4rem; }
  .meta, .muted { color: #667; }
  .small { font-size: 12px; }
  form, .bar { display: flex; gap: .5rem; align-items: center; margin-bottom: .8rem; flex-wrap: wrap; }
  input, select, textarea { padding: .3rem .5rem; border: 1px solid #bbc; border-radius: 4px; font: inherit; }
  input[type=number] { width: 6.5rem; }
  button { padding: .25rem .7rem; border: 1px solid #889; border-radius: 4px; background: #fff; font: inherit;
           cursor: pointer; white-space: nowrap; }
  button:hover { background: #eef; }
  button.danger { border-color: #b3261e; color: #b3261e; }
  button.primary { border-color: #1f5fbf; background: #1f5fbf; color: #fff; }
  table { border-collapse: collapse; width: 100%; background: #fff; }
  caption { text-align: left; padding: .3rem 0; color: #445; }
  th, td { border-bottom: 1px solid #e2e4ea; padding: .35rem .5rem; text-align: left; vertical-align: top; }
  th { background: #eceff4; font-weight: 600; white-space: nowrap; }
  th[data-sort] { cursor: pointer; user-select: none; }
  th[aria-sort=ascending]::after { content: " ▲"; font-size: 10px; }
  th[aria-sort=descending]::after { content: " ▼"; font-size: 10px; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  .ok { color: #176c2e; } .bad { color: #b3261e; font-weight: 600; } .warn { color: #9a6700; }
  .err { min-width: 11rem; max-width: 24rem; overflow-wrap: break-word; word-break: normal; }
  .clamp { display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical; overflow: hidden; }
  .table-wrap { overflow-x: auto; }
  code { font-size: 13px; }
  nav#tabs { display: flex; gap: .2rem; margin-top: .6rem; flex-wrap: wrap; }
  nav#tabs button { border: 1px solid transparent; border-bottom: none; border-radius: 6px 6px 0 0;
                    background: none; padding: .35rem .9rem; }
  nav#tabs button[aria-selected=true] { border-color: #e2e4ea; background: #f7f8fa; font-weight: 600; }
  #messages { display: flex; flex-direction: column; gap: .3rem; margin: .6rem 0; }
  .msg { display: flex; gap: .8rem; align-items: flex-start; justify-content: space-between;
         padding: .45rem .7rem; border-radius: 5px; border: 1px solid #b7d7bf; background: #eef8f0; }
  .msg.bad { border-color: #e4b4b0; background: #fdf0ef; font-weight: normal; color: #7c1d17; }
  .msg .text { overflow-wrap: break-word; min-width: 0; }
  .msg time { color: #667; margin-right: .5rem; font-size: 12px; }
  .status { min-height: 1.2em; margin-bottom: .4rem; }
  .chart svg { background: #fff; border: 1px solid #e2e4ea; width: 100%; max-width: 1100px; height: auto;
               display: block; }
  .nowrap { white-space: nowrap; }
  .chart text, svg.spark text { font: 11px system-ui, sans-serif; fill: #556; }
  .legend { display: flex; gap: 1rem; flex-wrap: wrap; list-style: none; padding: 0; margin: .4rem 0; }
  .swatch { display: inline-block; width: .9rem; height: .9rem; border-radius: 2px; margin-right: .3rem;
            vertical-align: -2px; }
"""

CORE_SCRIPT = r"""
"use strict";
const STORE = "keyrelay-admin-token";
const CFG = document.body.dataset;
const POLL_MS = Number(CFG.pollMs);
const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
const say = (sel, text, cls) => { const s = $(sel); s.textContent = text; s.className = cls || ""; };
const token = () => sessionStorage.getItem(STORE) || "";

async function api(method, path, body) {  // a string body is sent as it is (JSON text)
  const headers = { "Authorization": "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const text = body === undefined || typeof body === "string" ? body : JSON.stringify(body);
  const resp = await fetch("/admin/api" + path, { method, headers, body: text, cache: "no-store" });
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

// ------------------------------------------------------------------------------- times and durations

function dur(s) {  // 37794.8 -> "10 h 30 min"; never raw seconds past a minute
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + " s";
  const m = Math.round(s / 60);
  if (m < 60) return m + " min";
  const h = Math.floor(m / 60), mm = m % 60;
  if (h < 48) return h + " h" + (mm ? " " + String(mm).padStart(2, "0") + " min" : "");
  const d = Math.floor(h / 24), hh = h % 24;
  return d + " d" + (hh ? " " + hh + " h" : "");
}
const pad2 = (n) => String(n).padStart(2, "0");
function clock(epoch) {  // local HH:MM, with the date when it is not today
  const d = new Date(epoch * 1000), now = new Date();
  const hm = pad2(d.getHours()) + ":" + pad2(d.getMinutes());
  if (d.toDateString() === now.toDateString()) return hm;
  return d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + hm;
}
function ago(epoch) {
  const s = Date.now() / 1000 - epoch;
  return s < 5 ? "just now" : dur(s) + " ago";
}
const when = (epoch) => clock(epoch) + " (" + ago(epoch) + ")";
const until = (epoch) => clock(epoch) + " (in " + dur(epoch - Date.now() / 1000) + ")";

// ------------------------------------------------------------------------------- messages

// an action's outcome stays until dismissed: the periodic refresh never touches #messages
function notify(text, kind) {
  const box = el("div", null, "msg " + (kind || "ok"));
  box.setAttribute("role", kind === "bad" ? "alert" : "status");
  const t = el("div", null, "text");
  t.append(el("time", clock(Date.now() / 1000)), document.createTextNode(text));
  const b = el("button", "Dismiss", "dismiss");
  b.type = "button";
  b.addEventListener("click", () => box.remove());
  box.append(t, b);
  $("#messages").prepend(box);
  return box;
}
async function attempt(label, fn) {  // run an action; its result or error becomes a message
  try {
    const text = await fn();
    notify(label + ": " + (text || "done"), "ok");
    return true;
  } catch (e) {
    notify(label + " failed: " + e.message, "bad");
    return false;
  }
}

// ------------------------------------------------------------------------------- charts (inline SVG)

const OUTCOME_COLORS = { ok: "#4c9a5b", quota: "#e3a21a", auth: "#b3261e", transient: "#8e44ad",
                         client: "#7f8c8d" };

function sparkline(points, w, h) {  // bars: requests (grey-green), errors on top (red)
  const s = svg("svg", { class: "spark", width: w, height: h, viewBox: "0 0 " + w + " " + h, role: "img" });
  const max = Math.max(1, ...points.map((p) => p.requests));
  const bw = w / Math.max(1, points.length);
  let total = 0, errs = 0;
  points.forEach((p, i) => {
    const e = p.requests - p.ok;
    total += p.requests; errs += e;
    const hr = h * p.requests / max, he = h * e / max;
    if (p.requests) svg("rect", { x: i * bw, y: h - hr, width: Math.max(1, bw - 0.5), height: hr,
                                  fill: "#9cc5a5" }, s);
    if (e) svg("rect", { x: i * bw, y: h - he, width: Math.max(1, bw - 0.5), height: he,
                         fill: "#d9534f" }, s);
  });
  svg("line", { x1: 0, x2: w, y1: h - 0.5, y2: h - 0.5, stroke: "#ccd" }, s);
  svg("title", {}, s).textContent = total + " requests, " + errs + " errors in the last 24 h";
  s.dataset.requests = total; s.dataset.errors = errs;
  return s;
}

// a time chart: series = [{name, color, values: [...], kind: "bar"|"line"}], stacked bars, lines on top
function timeChart(times, series, opts) {
  const W = opts.width || 760, H = opts.height || 200, L = 56, R = 16, T = 12, B = 28;
  const bars = series.filter((s) => s.kind === "bar"), lines = series.filter((s) => s.kind !== "bar");
  const stack = times.map((_, i) => bars.reduce((a, s) => a + (s.values[i] || 0), 0));
  const max = Math.max(0, ...stack, ...lines.flatMap((s) => s.values.filter((v) => v !== null)));
  const tick = niceStep(max / 4), top = tick * Math.max(1, Math.ceil(max / tick));
  const n = Math.max(1, times.length);
  const x = (i) => L + i * (W - L - R) / n;
  const y = (v) => T + (H - T - B) * (1 - v / top);
  const c = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img" });
  svg("title", {}, c).textContent = opts.title;
  for (let v = 0; v <= top + tick / 2; v += tick) {
    svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e2e4ea" }, c);
    svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, c).textContent = (opts.fmt || fmtNum)(v);
  }
  const every = Math.max(1, Math.ceil(n / 8));
  times.forEach((t, i) => {
    if (i % every) return;
    svg("text", { x: x(i), y: H - B + 16, "text-anchor": "start" }, c).textContent = clock(t);
  });
  const bw = (W - L - R) / n;
  times.forEach((_, i) => {
    let base = 0;
    for (const s of bars) {
      const v = s.values[i] || 0;
      if (!v) continue;
      svg("rect", { x: x(i) + 0.5, y: y(base + v), width: Math.max(1, bw - 1), height: y(base) - y(base + v),
                    fill: s.color, "data-series": s.name }, c);
      base += v;
    }
  });
  for (const s of lines) {
    const pts = s.values.map((v, i) => v === null ? null : (x(i) + bw / 2) + "," + y(v)).filter((p) => p);
    if (pts.length) svg("polyline", { points: pts.join(" "), fill: "none", stroke: s.color, "stroke-width": 2,
                                      "data-series": s.name }, c);
  }
  const wrap = el("div", null, "chart");
  wrap.appendChild(c);
  const legend = el("ul", null, "legend");
  for (const s of series) {
    const li = el("li", null);
    const sw = el("span", null, "swatch");
    sw.style.background = s.color;
    li.append(sw, document.createTextNode(s.name));
    legend.appendChild(li);
  }
  wrap.appendChild(legend);
  return wrap;
}
function niceStep(raw) {  // 1, 2 or 5 times a power of ten, at least 1
  if (!(raw > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(raw))), f = raw / p;
  return Math.max(1, (f <= 1 ? 1 : f <= 2 ? 2 : f <= 5 ? 5 : 10) * p);
}
const fmtNum = (v) => v >= 1e6 ? (v / 1e6).toFixed(1) + "M" : v >= 1e3 ? (v / 1e3).toFixed(1) + "k"
  : Number.isInteger(v) || v >= 10 ? String(Math.round(v)) : v.toFixed(1);

// ------------------------------------------------------------------------------- tabs and routing

const TABS = {};
let current = null;
function registerTab(id, spec) { TABS[id] = spec; }
function go(hash) { if (location.hash === hash) route(); else location.hash = hash; }
function route() {
  const [id, ...rest] = location.hash.replace(/^#/, "").split("/");
  const tab = TABS[id] ? id : Object.keys(TABS)[0];
  current = tab;
  for (const p of document.querySelectorAll("section.tab")) p.hidden = p.id !== "panel-" + tab;
  for (const b of document.querySelectorAll("nav#tabs button")) {
    const selected = b.dataset.tab === tab || (tab === "key" && b.dataset.tab === "keys");
    b.setAttribute("aria-selected", String(selected));
  }
  if (TABS[tab].show) TABS[tab].show(decodeURIComponent(rest.join("/")));
}
function poll() { if (current && TABS[current].poll) TABS[current].poll(); }

for (const b of document.querySelectorAll("nav#tabs button")) {
  b.addEventListener("click", () => go("#" + b.dataset.tab));
}
$("#login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(STORE, $("#token").value.trim());
  $("#token").value = "";
  for (const t of Object.values(TABS)) if (t.login) t.login();
  route();
});
$("#forget").addEventListener("click", () => {
  sessionStorage.removeItem(STORE);
  for (const t of Object.values(TABS)) if (t.forget) t.forget();
  route();
});
"""

START_SCRIPT = r"""
window.addEventListener("hashchange", route);
route();
setInterval(poll, POLL_MS);
"""

SHELL = """
<header>
<h1>keyrelay admin</h1>
<div class="meta">version {version} · config <code>{source}</code> · refreshes every {poll_s:g} s</div>
<form id="login">
  <label for="token">Admin token</label>
  <input id="token" type="password" autocomplete="off" size="36" placeholder="server.admin_token">
  <button id="save" type="submit">Use token</button>
  <button id="forget" type="button">Forget</button>
</form>
<nav id="tabs" role="tablist">{nav}</nav>
</header>
<main>
<div id="messages" aria-live="polite"></div>
{panels}
</main>
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>keyrelay admin</title>
<style nonce="{nonce}">{style}</style>
</head>
<body data-poll-ms="{poll_ms}">
{body}
<script nonce="{nonce}">{script}</script>
</body>
</html>
"""


# the tabs, in order: the first is the default route
TABS: list[Tab] = [dashboard_keys.TAB, dashboard_keys.KEY_PAGE, dashboard_clients.TAB, dashboard_catalog.TAB,
                   dashboard_traffic.TAB, dashboard_audit.AUDIT, dashboard_audit.OPERATIONS]


def render_page(source: str, nonce: str) -> str:
    all_tabs = TABS
    nav = "".join(f'<button type="button" role="tab" id="tab-{t.id}" data-tab="{t.id}">'
                  f'{escape(t.title)}</button>' for t in all_tabs if t.nav)
    panels = "\n".join(f'<section class="tab" id="panel-{t.id}" role="tabpanel" hidden>{t.body}</section>'
                       for t in all_tabs)
    body = SHELL.format(version=escape(__version__), source=escape(source), poll_s=POLL_MS / 1000, nav=nav,
                        panels=panels)
    style = STYLE + "".join(t.style for t in all_tabs)
    # each tab's script in a block of its own: its names cannot clash with another tab's
    script = CORE_SCRIPT + "".join(f"\n// ---- tab: {t.id}\n{{\n{t.script}\n}}\n" for t in all_tabs)
    script += START_SCRIPT
    return PAGE.format(nonce=nonce, style=style, body=body, script=script, poll_ms=POLL_MS)


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
