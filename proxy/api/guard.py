"""Cross-site defences in front of every endpoint.

* **Host check (DNS rebinding).** A web page the operator opens can make its own host name resolve to
  127.0.0.1 and then read keyrelay's answers as "same origin". Only Host names keyrelay knows it is
  reached by are served: the bind address, ``localhost``, ``127.0.0.1``, ``[::1]``, plus
  ``server.allowed_hosts`` (``*`` turns the check off). Others get 421 Misdirected Request.
  ``/healthz`` and ``/readyz`` are exempt: orchestrators probe them by IP and they tell nothing.
* **JSON only (CSRF).** A page may POST ``text/plain`` to any origin without a CORS preflight, so a
  request with a body must say ``Content-Type: application/json`` (parameters such as
  ``charset=utf-8`` are fine), else 415. A browser cannot send that cross-origin without a preflight,
  which keyrelay never grants.
"""
from __future__ import annotations

import os

from flask import Flask, request

from proxy.config import ServerConfig
from proxy.errors import MisdirectedRequest, UnsupportedMediaType

ALWAYS_ALLOWED = ("localhost", "127.0.0.1", "[::1]")
EXEMPT_PATHS = ("/healthz", "/readyz")


def allowed_hosts(server: ServerConfig, bind: str | None = None) -> frozenset[str] | None:
    """Host names (lower case, no port) keyrelay answers to; None when any host is allowed."""
    if "*" in server.allowed_hosts:
        return None
    hosts = {*ALWAYS_ALLOWED, server.host.lower(), *server.allowed_hosts}
    if bind:  # `keyrelay serve --bind HOST:PORT`
        hosts.add(bind.rpartition(":")[0].lower() or server.host.lower())
    return frozenset(hosts)


def host_name(host: str) -> str:
    """``Host`` header value without its port, lower case (``[::1]:80`` → ``[::1]``)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.partition(":")[0]


def has_body() -> bool:
    return bool(request.content_length) or "chunked" in request.headers.get("Transfer-Encoding", "").lower()


def install(app: Flask, server: ServerConfig) -> None:
    hosts = allowed_hosts(server, os.environ.get("KEYRELAY_BIND"))

    @app.before_request
    def _guard() -> None:
        if hosts is not None and request.path not in EXEMPT_PATHS \
                and host_name(request.headers.get("Host", "")) not in hosts:
            raise MisdirectedRequest(
                "This gateway does not answer to that Host name; add it to server.allowed_hosts.")
        if request.method in ("POST", "PUT", "PATCH") and has_body() \
                and request.mimetype != "application/json":
            raise UnsupportedMediaType(
                "Send the request body as JSON with 'Content-Type: application/json'.")
