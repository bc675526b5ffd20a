"""Stored transactions as a HAR 1.2 log (http://www.softwareishard.com/blog/har-12-spec/): per transaction
one entry for the client exchange, then one per upstream attempt, in order.

Every entry's ``time`` is the sum of its ``timings`` that apply (-1 = not applicable: ``connect`` on a
reused connection, ``blocked`` / ``dns`` / ``ssl``, which keyrelay does not time apart). A stream's
answer is ``response.content.text`` (the events) and ``response.content._chunks`` (each event with
``time_ms``: its arrival after the entry started). keyrelay's own fields are under ``_keyrelay``:
``request_id``, ``key_id``, ``outcome``, ``attempt`` (0 = the client exchange, 1.. = upstream attempts),
``kind`` (``client`` | ``upstream``), ``route``, ``client_id``, ``error``, ``truncated`` (a body was cut
at ``inspector.max_body_bytes``). The documents are already redacted (``record.py``).
"""
from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from proxy import __version__

HTTP_VERSION = "HTTP/1.1"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _headers(pairs: list[list[str]]) -> list[dict]:
    return [{"name": n, "value": v} for n, v in pairs]


def _header(pairs: list[list[str]], name: str) -> str | None:
    return next((v for n, v in pairs if n.lower() == name), None)


def _reason(status: int | None) -> str:
    try:
        return HTTPStatus(status or 0).phrase
    except ValueError:
        return ""


def _query(url_or_query: str, is_url: bool) -> list[dict]:
    query = urlsplit(url_or_query).query if is_url else url_or_query
    return [{"name": k, "value": v} for k, v in parse_qsl(query, keep_blank_values=True)]


def _post_data(body: dict | None, headers: list[list[str]]) -> dict | None:
    if body is None:
        return None
    return {"mimeType": _header(headers, "content-type") or body.get("mime") or "application/json",
            "params": [], "text": body["text"]}


def _content(response: dict) -> dict:
    body = response.get("body") or {"text": "", "size": 0, "mime": ""}
    mime = _header(response.get("headers") or [], "content-type") or body.get("mime") or ""
    content: dict[str, Any] = {"size": int(body.get("size") or 0), "mimeType": mime, "text": body["text"]}
    if "chunks" in response:
        content["_chunks"] = response["chunks"]
    return content


def _timings(t: dict) -> tuple[dict, float]:
    timings = {"blocked": -1, "dns": -1, "connect": t.get("connect", -1), "ssl": -1,
               "send": t["send"], "wait": t["wait"], "receive": t["receive"]}
    total = round(sum(v for v in timings.values() if v >= 0), 3)
    return timings, total


def _truncated(*bodies: dict | None) -> bool:
    return any(b is not None and b.get("truncated") for b in bodies)


def _entry(started: float, request: dict, response: dict, timings: dict, server_ip: str | None,
           extra: dict) -> dict:
    timing, total = _timings(timings)
    req_body, resp_body = request.get("body"), response.get("body")
    resp_headers = response.get("headers") or []
    status = response.get("status")
    entry: dict[str, Any] = {
        "startedDateTime": _iso(started),
        "time": total,
        "request": {
            "method": request["method"] or "GET", "url": request["url"], "httpVersion": HTTP_VERSION,
            "cookies": [], "headers": _headers(request.get("headers") or []),
            "queryString": request["queryString"], "headersSize": -1,
            "bodySize": int(req_body["size"]) if req_body else 0,
        },
        "response": {
            "status": int(status or 0), "statusText": _reason(status), "httpVersion": HTTP_VERSION,
            "cookies": [], "headers": _headers(resp_headers), "content": _content(response),
            "redirectURL": _header(resp_headers, "location") or "", "headersSize": -1,
            "bodySize": int(resp_body["size"]) if resp_body else (-1 if status is None else 0),
        },
        "cache": {},
        "timings": timing,
        "_keyrelay": {**extra, "truncated": _truncated(req_body, resp_body)},
    }
    post = _post_data(req_body, request.get("headers") or [])
    if post is not None:
        entry["request"]["postData"] = post
    if server_ip:
        entry["serverIPAddress"] = server_ip
    return entry


def entries(doc: dict, base_url: str = "http://keyrelay") -> list[dict]:
    """The HAR entries of one stored transaction: the client exchange, then each upstream attempt."""
    client = doc["client"]
    creq = client["request"]
    query = creq.get("query") or ""
    url = base_url.rstrip("/") + (creq.get("path") or "/") + (f"?{query}" if query else "")
    common = {"request_id": doc["request_id"], "route": doc.get("route"), "client_id": doc.get("client_id"),
              "model": doc.get("model")}
    out = [_entry(doc["started_at"], {**creq, "url": url, "queryString": _query(query, False)},
                  client["response"], client["timings"], None,
                  {**common, "kind": "client", "attempt": 0, "key_id": doc.get("key_id"),
                   "outcome": doc.get("outcome")})]
    for a in doc.get("attempts", []):
        req = {**a["request"], "queryString": _query(a["request"]["url"], True)}
        out.append(_entry(a["started_at"], req, a["response"], a["timings"], a.get("server_ip"),
                          {**common, "kind": "upstream", "attempt": a["n"], "key_id": a.get("key_id"),
                           "outcome": a.get("outcome"), "error": a.get("error"),
                           "provider": a.get("provider"), "upstream_model": a.get("model")}))
    return out


def har(docs: list[dict], base_url: str = "http://keyrelay") -> dict:
    """A HAR 1.2 document of ``docs`` (oldest first in the log, as browsers write it)."""
    log_entries = [e for doc in sorted(docs, key=lambda d: d["started_at"]) for e in entries(doc, base_url)]
    return {"log": {"version": "1.2", "creator": {"name": "keyrelay", "version": __version__},
                    "pages": [], "entries": log_entries}}
