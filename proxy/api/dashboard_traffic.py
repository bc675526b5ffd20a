"""The dashboard's Traffic tab (issue 16), one of ``dashboard.TABS``.

The list is ``GET /admin/api/inspect?limit=50`` (refreshed with the page while the tab is shown, newest
first); clicking a row shows that
transaction (``GET /admin/api/inspect/<id>``): the client's request and answer, each upstream attempt with
a timing bar (connect / send / wait / receive drawn as SVG rects on one time axis) and the bodies (already
redacted by the server). "Download HAR" fetches ``/admin/api/inspect.har`` with the token and saves it;
"Clear" is ``DELETE /admin/api/inspect``. Every value goes in with textContent or as an SVG attribute.
It uses the page script's helpers (``api``, ``el``, ``cell``, ``svg``, ``say``, ``token``, ``$``).
"""
from __future__ import annotations

from proxy.api.dashboard_tab import Tab

BODY = """
<h2>Traffic</h2>
<div class="bar">
  <button id="t-refresh" type="button">Refresh</button>
  <button id="t-har" type="button">Download HAR</button>
  <button id="t-clear" type="button">Clear</button>
  <span id="t-status" role="status" class="muted"></span>
</div>
<table id="traffic-list">
  <thead><tr>
    <th>Started</th><th>Request id</th><th>Model</th><th>Client</th><th>Route</th><th class="num">Status</th>
    <th>Outcome</th><th class="num">ms</th><th class="num">Bytes</th>
  </tr></thead>
  <tbody></tbody>
</table>
<section id="traffic-detail" hidden>
  <h3 id="td-title"></h3>
  <div id="td-timing"></div>
  <div id="td-parts"></div>
</section>
"""

STYLE = """
  #traffic-list tbody tr { cursor: pointer; }
  #traffic-list tbody tr:hover { background: #eef2fb; }
  #traffic-detail pre { background: #fff; border: 1px solid #e2e4ea; padding: .5rem; max-height: 16rem;
                        overflow: auto; white-space: pre-wrap; word-break: break-all; }
  #td-timing svg { background: #fff; border: 1px solid #e2e4ea; max-width: 100%; height: auto; }
  #td-timing text { font: 11px system-ui, sans-serif; fill: #556; }
"""

SCRIPT = r"""
// ------------------------------------------------------------------------------------------ traffic

const PHASES = [["connect", "#9467bd"], ["send", "#17becf"], ["wait", "#ff7f0e"], ["receive", "#2ca02c"]];
const tsay = (text, cls) => say("#t-status", text, cls);

async function refreshTraffic() {
  if (!token()) return;
  try {
    const data = await api("GET", "/inspect?limit=50");
    const tbody = $("#traffic-list tbody");
    tbody.replaceChildren();
    for (const r of data.data) {
      const tr = document.createElement("tr");
      tr.dataset.id = r.id;
      cell(tr, new Date(r.started_at * 1000).toLocaleTimeString());
      cell(tr, "").appendChild(el("code", r.request_id));
      cell(tr, r.model); cell(tr, r.client_id); cell(tr, r.route);
      cell(tr, r.status, "num " + (r.status >= 400 ? "bad" : "ok"));
      cell(tr, r.outcome);
      cell(tr, r.duration_ms === null ? "" : Number(r.duration_ms).toFixed(1), "num");
      cell(tr, r.bytes, "num");
      tr.addEventListener("click", () => showTransaction(r.id));
      tbody.appendChild(tr);
    }
    tsay((data.enabled ? "capturing" : "inspector off (inspector.enabled)") + " · " + data.entries +
         " stored, " + data.bytes + " bytes", data.enabled ? "ok" : "muted");
  } catch (e) {
    tsay(e.message, "bad");
  }
}

function timingBar(tx) {
  const rows = [{ label: "client", t: tx.client.timings, start: 0 }];
  for (const a of tx.attempts) {
    rows.push({ label: "#" + a.n + " " + a.provider + " " + (a.outcome || ""), t: a.timings,
                start: Math.max(0, (a.started_at - tx.started_at) * 1000) });
  }
  const total = Math.max(1, ...rows.map((r) => r.start + r.t.total));
  const W = 720, L = 150, H = 22;
  const box = svg("svg", { viewBox: "0 0 " + W + " " + (rows.length * H + 24), width: W,
                           role: "img", "aria-label": "timings" });
  rows.forEach((r, i) => {
    const y = i * H + 4;
    svg("text", { x: 4, y: y + 13 }, box).textContent = r.label;
    let x = L + (r.start / total) * (W - L - 10);
    const phases = r.label === "client" ? [["wait", "#ff7f0e"], ["receive", "#2ca02c"]] : PHASES;
    for (const [name, color] of phases) {
      const ms = Math.max(0, r.t[name] || 0);
      const w = (ms / total) * (W - L - 10);
      const rect = svg("rect", { x, y, width: Math.max(w, 0.5), height: H - 8, fill: color }, box);
      svg("title", {}, rect).textContent = name + " " + ms.toFixed(2) + " ms";
      x += w;
    }
  });
  svg("text", { x: L, y: rows.length * H + 18 }, box).textContent =
    "0 — " + total.toFixed(1) + " ms · connect, send, wait (first byte), receive";
  return box;
}

function part(title, msg) {
  const sec = document.createElement("div");
  sec.appendChild(el("h4", title));
  if (msg.url || msg.path) sec.appendChild(el("div", (msg.method || "") + " " + (msg.url || msg.path)));
  if (msg.status !== undefined) sec.appendChild(el("div", "status " + msg.status));
  sec.appendChild(el("pre", (msg.headers || []).map(([n, v]) => n + ": " + v).join("\n")));
  const body = msg.body;
  if (body) {
    const note = body.truncated ? "\n… (cut: " + body.size + " bytes in all)" : "";
    sec.appendChild(el("pre", body.text + note));
  }
  if (msg.chunks) {
    sec.appendChild(el("div", msg.chunks.length + " stream events; arrival (ms): " +
                             msg.chunks.slice(0, 40).map((c) => c.time_ms.toFixed(1)).join(", ")));
  }
  return sec;
}

async function showTransaction(id) {
  try {
    const data = await api("GET", "/inspect/" + encodeURIComponent(id));
    const tx = data.transaction;
    $("#traffic-detail").hidden = false;
    $("#td-title").textContent = tx.request_id + " · " + (tx.model || "") + " · " + tx.status + " · " +
      tx.duration_ms.toFixed(1) + " ms";
    $("#td-timing").replaceChildren(timingBar(tx));
    const parts = $("#td-parts");
    parts.replaceChildren(part("Client request", tx.client.request));
    for (const a of tx.attempts) {
      parts.appendChild(part("Attempt " + a.n + " → " + a.provider + "/" + a.model + " (" + a.key_id + ", " +
                             (a.outcome || "") + (a.error ? ": " + a.error : "") + ")", a.request));
      parts.appendChild(part("Attempt " + a.n + " answer", a.response));
    }
    parts.appendChild(part("Client response", tx.client.response));
  } catch (e) {
    tsay(e.message, "bad");
  }
}

async function downloadHar() {
  try {
    const resp = await fetch("/admin/api/inspect.har", { headers: { "Authorization": "Bearer " + token() },
                                                         cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const url = URL.createObjectURL(await resp.blob());
    const a = el("a"); a.href = url; a.download = "keyrelay.har";
    document.body.appendChild(a); a.click(); a.remove();
    URL.revokeObjectURL(url);
  } catch (e) {
    tsay("HAR export failed: " + e.message, "bad");
  }
}

async function clearTraffic() {
  try {
    const data = await api("DELETE", "/inspect");
    tsay("cleared " + data.deleted, "ok");
    $("#traffic-detail").hidden = true;
  } catch (e) {
    tsay(e.message, "bad");
  }
  refreshTraffic();
}

$("#t-refresh").addEventListener("click", refreshTraffic);
$("#t-har").addEventListener("click", downloadHar);
$("#t-clear").addEventListener("click", clearTraffic);
registerTab("traffic", { show: refreshTraffic, poll: refreshTraffic });
"""

TAB = Tab("traffic", "Traffic", BODY, SCRIPT, STYLE)
