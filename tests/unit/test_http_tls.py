"""The transport's TLS path against local HTTPS servers whose certificate a test CA signed (made with the
openssl command at test time): verification, host names, tls.verify: false, keep-alive reuse of one TLS
connection, and an https upstream reached through a CONNECT proxy started by the test."""
from __future__ import annotations

import select
import shutil
import socket
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
    timeout = 5  # a kept-alive connection nobody uses ends its handler thread by itself

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append(self.requestline)
        reply = b'{"echo": ' + body + b"}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: object) -> None:
        pass


class TlsServer(ThreadingHTTPServer):
    """Counts accepted connections: each one is one TLS handshake."""

    daemon_threads = True

    def __init__(self, host: str, cert, key) -> None:
        super().__init__((host, 0), Hello)
        self.connections = 0
        self.seen: list[str] = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.socket = ctx.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def get_request(self):  # the handshake happens in accept()
        pair = super().get_request()
        self.connections += 1
        return pair


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A test CA and a leaf certificate for localhost / 127.0.0.1 signed by it: (ca, cert, key)."""
    d = tmp_path_factory.mktemp("tls")
    ca, ca_key, cert, key, csr, ext = (d / n for n in ("ca.pem", "ca.key", "cert.pem", "key.pem", "leaf.csr",
                                                       "ext.cnf"))
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-days", "1", "-subj", "/CN=keyrelay test CA",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
             "-keyout", str(ca_key), "-out", str(ca))
    _openssl("req", *ec, "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid,issuer\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
             "-days", "1", "-out", str(cert), "-extfile", str(ext))
    return str(ca), str(cert), str(key)


@pytest.fixture
def server(pki):
    srv = TlsServer("127.0.0.1", pki[1], pki[2])
    http._POOL.clear()
    yield srv
    http._POOL.clear()
    srv.shutdown()
    srv.server_close()


def test_https_with_the_test_ca_reuses_one_tls_connection(pki, server):
    transport = http.Transport(ca_file=pki[0])
    url = f"https://127.0.0.1:{server.server_address[1]}"
    status, _, data = http.request("POST", url + "/x", headers={}, body={"a": 1}, timeouts=T,
                                   transport=transport)
    assert status == 200 and data == b'{"echo": {"a":1}}'
    status, _, data = http.request("POST", url + "/y", headers={}, body={"b": 2}, timeouts=T,
                                   transport=transport)
    assert status == 200 and data == b'{"echo": {"b":2}}'
    assert server.connections == 1  # the second request went over the same TLS connection: one handshake
    assert server.seen == ["POST /x HTTP/1.1", "POST /y HTTP/1.1"]


def test_https_refuses_an_untrusted_certificate(server):
    with pytest.raises(UpstreamError) as info:  # the system trust store does not know the test CA
        http.request("POST", f"https://127.0.0.1:{server.server_address[1]}/x", headers={}, body={},
                     timeouts=T, transport=http.Transport())
    assert info.value.outcome == TRANSIENT
    assert "Certificate" in info.value.message or "SSL" in info.value.message


def test_https_checks_the_host_name(pki):
    srv = TlsServer("127.0.0.2", pki[1], pki[2])  # a trusted certificate, but for localhost / 127.0.0.1
    try:
        with pytest.raises(UpstreamError) as info:
            http.request("POST", f"https://127.0.0.2:{srv.server_address[1]}/x", headers={}, body={},
                         timeouts=T, transport=http.Transport(ca_file=pki[0]))
        assert "Certificate" in info.value.message or "SSL" in info.value.message
    finally:
        http._POOL.clear()
        srv.shutdown()
        srv.server_close()


def test_verify_false_accepts_any_certificate_and_has_its_own_pool(server):
    url = f"https://127.0.0.1:{server.server_address[1]}/x"
    unchecked = http.Transport(verify=False)
    assert http.request("POST", url, headers={}, body={}, timeouts=T, transport=unchecked)[0] == 200
    with pytest.raises(UpstreamError):  # its unchecked connection is never lent to a verifying transport
        http.request("POST", url, headers={}, body={}, timeouts=T, transport=http.Transport())


def test_one_ssl_context_per_verify_and_ca_file(pki):
    assert http.tls_context(True, pki[0]) is http.tls_context(True, pki[0])
    assert http.tls_context(False, None) is not http.tls_context(True, None)


def test_transport_for_warns_once_about_verify_false(caplog):
    from proxy.config import ProviderConfig, TlsConfig

    provider = ProviderConfig("inspected", "openai", "https://example.invalid", tls=TlsConfig(verify=False))
    with caplog.at_level("WARNING", logger="keyrelay"):
        first = http.transport_for(provider)
        assert http.transport_for(provider) is first
    lines = [r.getMessage() for r in caplog.records if "verification is disabled" in r.getMessage()]
    assert lines == ["provider inspected: TLS certificate verification is disabled (tls.verify: false)"]


# -- a CONNECT proxy ------------------------------------------------------------------------------------


class ConnectProxy:
    """A small threaded HTTP CONNECT proxy on 127.0.0.1: records each request head, then pipes bytes
    both ways; every thread ends by itself (the listener after `close`, a pipe on EOF or 5 s idle)."""

    def __init__(self) -> None:
        self.heads: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(5)
        with client:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = client.recv(65536)
                if not data:
                    return
                buf += data
            head, _, rest = buf.partition(b"\r\n\r\n")
            self.heads.append(head.decode("latin-1"))
            method, target, _ = head.split(b"\r\n")[0].decode().split(" ")
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=5) as origin:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    origin.sendall(rest)
                self._pipe(client, origin)

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        while True:
            ready, _, _ = select.select([a, b], [], [], 5)
            if not ready:
                return
            for s in ready:
                data = s.recv(65536)
                if not data:
                    return
                (b if s is a else a).sendall(data)

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def test_https_upstream_through_a_connect_proxy(pki, server):
    proxy = ConnectProxy()
    try:
        transport = http.Transport(proxy=f"http://user:s3cret@127.0.0.1:{proxy.port}", ca_file=pki[0])
        url = f"https://localhost:{server.server_address[1]}/v1/chat"
        status, _, data = http.request("POST", url, headers={}, body={"q": 1}, timeouts=T,
                                       transport=transport)
        assert (status, data) == (200, b'{"echo": {"q":1}}')
        assert http.request("POST", url, headers={}, body={}, timeouts=T, transport=transport)[0] == 200
        assert len(proxy.heads) == 1  # one tunnel, kept alive and reused
        line, *headers = proxy.heads[0].split("\r\n")
        assert line == f"CONNECT localhost:{server.server_address[1]} HTTP/1.1"
        assert "proxy-authorization: Basic dXNlcjpzM2NyZXQ=" in headers  # user:s3cret, for the proxy only
        assert server.seen == ["POST /v1/chat HTTP/1.1"] * 2  # origin-form inside the tunnel
    finally:
        http._POOL.clear()
        proxy.close()


def test_https_proxy_from_the_environment_and_no_proxy(pki, server):
    proxy = ConnectProxy()
    try:
        url = f"https://127.0.0.1:{server.server_address[1]}/x"
        via_env = http.Transport(proxy=None, ca_file=pki[0], env={"https_proxy": proxy.url})
        assert http.request("POST", url, headers={}, body={}, timeouts=T, transport=via_env)[0] == 200
        assert len(proxy.heads) == 1
        bypass = http.Transport(proxy=None, ca_file=pki[0],
                                env={"HTTPS_PROXY": proxy.url, "NO_PROXY": "example.com,127.0.0.0/8"})
        assert http.request("POST", url, headers={}, body={}, timeouts=T, transport=bypass)[0] == 200
        assert len(proxy.heads) == 1  # NO_PROXY: straight to the upstream
        assert server.connections == 2  # the pool key holds the proxy: the tunnel is not lent to `bypass`
    finally:
        http._POOL.clear()
        proxy.close()


def test_a_proxy_that_refuses_the_tunnel_is_a_transient_error_without_credentials(pki):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def refuse() -> None:
        listener.settimeout(5)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(5)
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    transport = http.Transport(proxy=f"http://bob:hunter2@127.0.0.1:{listener.getsockname()[1]}")
    try:
        with pytest.raises(UpstreamError) as info:
            http.request("GET", "https://upstream.invalid/x", headers={}, timeouts=T, transport=transport)
        assert info.value.outcome == TRANSIENT and "407" in info.value.message
        assert "hunter2" not in info.value.message and "bob" not in info.value.message
    finally:
        thread.join(5)
        listener.close()
