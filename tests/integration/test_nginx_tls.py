"""Issue 19: the TLS example in config/nginx.conf works as written — uncommented, with a self-signed
certificate made here (openssl) and loopback ports, Debian's nginx serves keyrelay over HTTPS, streams
included."""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.harness import REPO, Server, free_port, mock_config

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def tls_site(tmp: Path, plain_port: int, tls_port: int, keyrelay_port: int) -> str:
    site = (REPO / "config" / "nginx.conf").read_text()
    block = re.search(r"# BEGIN TLS EXAMPLE\n(.*?)# END TLS EXAMPLE", site, re.S)
    assert block, "config/nginx.conf lost its TLS example"
    enabled = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in
                        block.group(1).splitlines())
    site = site.replace(block.group(1), enabled + "\n")
    replacements = [
        ("listen 80;", f"listen 127.0.0.1:{plain_port};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{tls_port} ssl;"),
        ("server 127.0.0.1:4806;", f"server 127.0.0.1:{keyrelay_port};"),
        ("/etc/letsencrypt/live/gateway.example.com/fullchain.pem", str(tmp / "cert.pem")),
        ("/etc/letsencrypt/live/gateway.example.com/privkey.pem", str(tmp / "key.pem")),
    ]
    for old, new in replacements:
        assert site.count(old) == 1, f"config/nginx.conf changed shape: {old!r}"
        site = site.replace(old, new)
    return site


def test_tls_example_serves_keyrelay_over_https(tmp_path: Path) -> None:
    if NGINX is None or shutil.which("openssl") is None:
        pytest.skip("nginx and openssl are needed (.ci/test installs Debian's nginx)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")],
                   check=True, capture_output=True, timeout=60)
    config = mock_config()
    config["providers"][0]["chunk_delay_ms"] = 200
    (tmp_path / "kr").mkdir()
    with Server(tmp_path / "kr", config) as gw:
        plain, tls = free_port(), free_port()
        (tmp_path / "site.conf").write_text(tls_site(tmp_path, plain, tls, gw.port))
        temp = "".join(f"{n}_temp_path {tmp_path}/{n};\n"
                       for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        (tmp_path / "nginx.conf").write_text(
            f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/nginx-error.log;\nevents {{}}\n"
            f"http {{\naccess_log off;\n{temp}include {tmp_path}/site.conf;\n}}\n")
        check = subprocess.run([NGINX, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                                "-e", str(tmp_path / "nginx-error.log")], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        nginx = subprocess.Popen([NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                                  "-e", str(tmp_path / "nginx-error.log"), "-g", "daemon off;"])
        try:
            url, cert = f"https://127.0.0.1:{tls}", str(tmp_path / "cert.pem")
            deadline = time.monotonic() + 10
            while True:
                try:
                    r = requests.get(url + "/healthz", verify=cert, timeout=2)
                    break
                except requests.ConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert r.status_code == 200
            body = {"model": "mock-chat", "stream": True,
                    "messages": [{"role": "user", "content": "a b c d"}]}
            with requests.post(url + "/v1/chat/completions", json=body, verify=cert, stream=True,
                               timeout=15) as resp:
                lines = [ln for ln in resp.iter_lines() if ln]
            assert resp.status_code == 200
            assert lines[0].startswith(b"data: {") and lines[-1] == b"data: [DONE]"
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
