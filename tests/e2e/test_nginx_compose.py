"""deploy/nginx-compose.conf, run by Debian's nginx in front of a production daphne: TLS on its
443 server with a throwaway self-signed certificate, plain HTTP sent to HTTPS but for the probe
and the phones' OsmAnd paths, and the scheme passed on, so that Django sends HSTS and Secure
cookies. Only what cannot run here is changed: ports, the upstream, file paths."""

import asyncio
import http.client
import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import websockets

from deploy.processes import free_port, terminate, wait_for
from tests.e2e.clients import next_frame
from tests.e2e.conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CONF = ROOT / "deploy" / "nginx-compose.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def nginx_version() -> tuple[int, ...]:
    output = subprocess.run([NGINX, "-v"], capture_output=True, text=True).stderr
    return tuple(int(part) for part in re.search(r"nginx/([\d.]+)", output)[1].split("."))


def self_signed_certificate(directory: Path) -> Path:
    """Write fullchain.pem and privkey.pem for 127.0.0.1 into `directory`; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", str(directory / "privkey.pem"), "-out", str(directory / "fullchain.pem")],
        check=True, capture_output=True,
    )  # fmt: skip
    return directory


def substitute(text: str, old: str, new: str, count: int = 1) -> str:
    assert text.count(old) == count, f"nginx-compose.conf no longer has {old!r} {count} time(s)"
    return text.replace(old, new)


class ComposeNginx:
    """nginx-compose.conf on free ports of 127.0.0.1, in front of one replica."""

    def __init__(self, workdir: Path, upstream: str):
        self.workdir = workdir
        self.http_port, self.https_port, self.osmand_port = free_port(), free_port(), free_port()
        self.certs = self_signed_certificate(workdir / "certs")
        self.tls = ssl.create_default_context(cafile=self.certs / "fullchain.pem")
        self.config = workdir / "nginx.conf"
        self.config.write_text(self.render(upstream))
        self.process: subprocess.Popen | None = None

    def render(self, upstream: str) -> str:
        text = CONF.read_text()
        text = substitute(text, "server web:8000 resolve", f"server {upstream}")
        text = substitute(text, "listen 80;", f"listen 127.0.0.1:{self.http_port};")
        https = f"listen 127.0.0.1:{self.https_port} ssl"
        text = substitute(text, "listen 443 ssl;", f"{https};")
        text = substitute(text, "listen 5055;", f"listen 127.0.0.1:{self.osmand_port};")
        text = substitute(text, "/etc/nginx/certs/", f"{self.certs}/", count=2)
        if nginx_version() < (1, 25, 1):
            # Debian 12's nginx predates the http2 directive; its listen parameter says the same.
            text = substitute(text, "http2 on;", "")
            text = substitute(text, f"{https};", f"{https} http2;")
        temporary = "".join(
            f"    {kind}_temp_path {self.workdir / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        return substitute(text, "http {\n", "http {\n" + temporary)

    def command(self, *args: str) -> list[str]:
        pid_and_log = f"pid {self.workdir / 'nginx.pid'}; error_log {self.workdir / 'error.log'};"
        return [NGINX, "-p", str(self.workdir), "-c", str(self.config), "-g", pid_and_log, *args]

    def start(self) -> "ComposeNginx":
        self.log = open(self.workdir / "nginx.log", "w")  # closed in stop()
        self.process = subprocess.Popen(
            self.command("-g", "daemon off;"), stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_for(f"http://127.0.0.1:{self.http_port}/healthz", self.process)
        return self

    def stop(self) -> None:
        terminate(self.process)
        self.log.close()

    def get(self, path: str, *, tls: bool = True, port: int | None = None):
        """GET through nginx; return the response (headers read, body in .body)."""
        if tls:
            connection = http.client.HTTPSConnection(
                "127.0.0.1", port or self.https_port, context=self.tls, timeout=10
            )
        else:
            connection = http.client.HTTPConnection("127.0.0.1", port or self.http_port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            response.body = response.read().decode()
            return response
        finally:
            connection.close()


def test_nginx_accepts_the_compose_configuration(tmp_path):
    nginx = ComposeNginx(tmp_path, "127.0.0.1:8000")
    result = subprocess.run(nginx.command("-t"), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


@pytest.fixture
def edge(server, tmp_path):
    """A production replica with one team, behind nginx-compose.conf's nginx."""
    server.use_production_settings()
    server.tokens = server.start_daphne(alpha="ann")
    nginx = ComposeNginx(tmp_path / "nginx", f"127.0.0.1:{server.port}")
    nginx.workdir.mkdir(exist_ok=True)
    nginx.start()
    yield nginx
    nginx.stop()


def test_https_pages_carry_hsts_the_policy_and_secure_cookies(edge):
    page = edge.get("/accounts/login/")
    assert page.status == 200
    assert page.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    policy = [part.split() for part in page.headers["Content-Security-Policy"].split(";")]
    assert ["connect-src", "'self'", f"wss://127.0.0.1:{edge.https_port}"] in policy
    cookies = page.headers.get_all("Set-Cookie")
    assert any(c.startswith("csrftoken=") and "; Secure" in c for c in cookies), cookies
    # The stylesheet the page names is in the collection (the manifest storage's hashed name).
    stylesheet = re.search(r'href="(/static/css/app\.[0-9a-f]+\.css)"', page.body)[1]
    assert edge.get(stylesheet).status == 200


def test_https_speaks_http2_and_tls_1_2_or_later(edge):
    context = ssl.create_default_context(cafile=edge.certs / "fullchain.pem")
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", edge.https_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.selected_alpn_protocol() == "h2"
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_plain_http_goes_to_https_but_the_probe_and_osmand_stay(edge):
    page = edge.get("/accounts/login/?next=/", tls=False)
    assert page.status == 301
    assert page.headers["Location"] == "https://127.0.0.1/accounts/login/?next=/"
    assert edge.get("/healthz", tls=False).status == 200
    # No credential: refused by the application itself (not redirected), on both plain ports.
    assert edge.get("/osmand/?lat=1&lon=2", tls=False).status not in (301, 302)
    assert edge.get("/?lat=1&lon=2", tls=False, port=edge.osmand_port).status not in (301, 302)


def test_a_device_reports_over_wss(edge, server):
    url = f"wss://127.0.0.1:{edge.https_port}/ws/worker/"
    headers = {"Authorization": f"Bearer {server.tokens['alpha']}"}

    async def report() -> dict:
        async with websockets.connect(url, additional_headers=headers, ssl=edge.tls) as device:
            await device.send(json.dumps({"lat": 41.39, "lng": 2.16, "ts": time.time(), "seq": 1}))
            return await next_frame(device, "ack")

    assert asyncio.run(report())["seq"] == 1
