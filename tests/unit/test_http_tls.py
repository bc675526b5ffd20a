"""The transport's TLS path: certificate and host name verification against a local HTTPS server."""
from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from proxy.errors import TRANSIENT, UpstreamError
from proxy.providers import http
from proxy.providers.base import Timeouts

T = Timeouts(connect=2, first_byte=2, idle=2)
pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


class Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = b'{"echo": ' + body + b"}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


def serve_tls(host: str, cert, key) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((host, 0), Hello)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture(scope="module")
def tls_server(certificate):
    server = serve_tls("127.0.0.1", *certificate)
    yield server.server_address[1], certificate[0]
    server.shutdown()


@pytest.fixture
def trusted(tls_server, monkeypatch):
    port, cert = tls_server
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.set_alpn_protocols(["http/1.1"])
    monkeypatch.setattr(http._POOL, "_tls", ctx)
    http._POOL.clear()
    yield port
    http._POOL.clear()


def test_https_request_with_a_trusted_certificate(trusted):
    status, _, data = http.request("POST", f"https://127.0.0.1:{trusted}/x", headers={}, body={"a": 1},
                                   timeouts=T)
    assert status == 200 and data == b'{"echo": {"a":1}}'
    # the connection is kept alive and reused
    assert http.request("POST", f"https://localhost:{trusted}/y", headers={}, body={}, timeouts=T)[0] == 200


def test_https_refuses_an_untrusted_certificate(tls_server, monkeypatch):
    port, _ = tls_server
    monkeypatch.setattr(http._POOL, "_tls", None)  # the default context: system trust store only
    http._POOL.clear()
    with pytest.raises(UpstreamError) as info:
        http.request("POST", f"https://127.0.0.1:{port}/x", headers={}, body={}, timeouts=T)
    assert info.value.outcome == TRANSIENT
    assert "Certificate" in info.value.message or "SSL" in info.value.message
    http._POOL.clear()


def test_https_checks_the_host_name(certificate, monkeypatch):
    server = serve_tls("127.0.0.2", *certificate)  # a trusted certificate, but for localhost / 127.0.0.1
    monkeypatch.setattr(http._POOL, "_tls", ssl.create_default_context(cafile=str(certificate[0])))
    http._POOL.clear()
    try:
        with pytest.raises(UpstreamError) as info:
            http.request("POST", f"https://127.0.0.2:{server.server_address[1]}/x", headers={}, body={},
                         timeouts=T)
        assert "Certificate" in info.value.message or "SSL" in info.value.message
    finally:
        server.shutdown()
        http._POOL.clear()
