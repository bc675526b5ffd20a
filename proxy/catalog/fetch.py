"""One catalog download with ``requests`` (not the hot path): conditional on the stored ``ETag`` /
``Last-Modified``, bounded in time (connect, each read, the whole download) and size. A failure is a
``FetchError`` whose message is safe to store and show (no response body, no query string)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson
import requests

CONNECT_S = 5.0
READ_S = 30.0
TOTAL_S = 120.0  # a trickling download is abandoned (the refresh claim's lease is 300 s)
MAX_BYTES = 64 * 1024 * 1024  # models.dev's api.json is ~4.6 MB


class FetchError(Exception):
    pass


@dataclass(frozen=True)
class Fetched:
    not_modified: bool
    doc: object = None
    etag: str | None = None
    last_modified: str | None = None


def safe_url(url: str) -> str:
    """A URL fit for logs, errors and the store: scheme, host, port and path only."""
    try:
        u = urlsplit(url)
        port = f":{u.port}" if u.port else ""
    except ValueError:
        return "<an unparsable URL>"
    return f"{u.scheme}://{u.hostname or ''}{port}{u.path}"


def fetch(url: str, etag: str | None = None, last_modified: str | None = None, *,
          session: requests.Session | None = None) -> Fetched:
    headers = {"Accept": "application/json", "User-Agent": "keyrelay-catalog"}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    getter = session.get if session is not None else requests.get
    try:
        with getter(url, headers=headers, timeout=(CONNECT_S, READ_S), stream=True) as resp:
            if resp.status_code == 304:
                return Fetched(True, etag=resp.headers.get("ETag") or etag,
                               last_modified=resp.headers.get("Last-Modified") or last_modified)
            if resp.status_code != 200:
                raise FetchError(f"{safe_url(url)} answered HTTP {resp.status_code}")
            body = bytearray()
            deadline = time.monotonic() + TOTAL_S
            for chunk in resp.iter_content(1 << 16):
                body += chunk
                if len(body) > MAX_BYTES:
                    raise FetchError(f"{safe_url(url)}: larger than {MAX_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"{safe_url(url)}: download took longer than {TOTAL_S:g} s")
            etag_out, modified_out = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
    except requests.RequestException as exc:
        raise FetchError(f"{safe_url(url)}: {type(exc).__name__}") from None
    try:
        doc = orjson.loads(bytes(body))
    except orjson.JSONDecodeError:
        raise FetchError(f"{safe_url(url)}: the body is not JSON") from None
    return Fetched(False, doc, etag_out, modified_out)
