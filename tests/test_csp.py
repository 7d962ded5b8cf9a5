"""teamtrack/csp.py, and the templates it relies on: the tile host a MAP_TILE_URL allows, the
page's own socket origin in connect-src, and nothing inline in any template, which the policy
(no 'unsafe-inline') would block."""

import re
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, RequestFactory

from teamtrack.csp import socket_origin, tile_sources

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@pytest.mark.parametrize(
    ("url", "sources"),
    [
        ("https://tile.openstreetmap.org/{z}/{x}/{y}.png", ["https://tile.openstreetmap.org"]),
        ("https://{s}.tile.example.org/{z}/{x}/{y}{r}.png", ["https://*.tile.example.org"]),
        ("https://tiles-{s}.maps.example.org/{z}/{x}/{y}.png", ["https://*.maps.example.org"]),
        ("http://127.0.0.1:9/{z}/{x}/{y}.png", ["http://127.0.0.1:9"]),
        ("https://[2001:db8::1]:8443/{z}/{x}/{y}.png", ["https://[2001:db8::1]:8443"]),
        ("//tiles.example.org/{z}/{x}/{y}.png", ["tiles.example.org"]),
        ("/tiles/{z}/{x}/{y}.png", []),  # our own origin: 'self'
        ("", []),  # no tiles
    ],
)
def test_the_tile_source_is_the_tile_urls_origin(url, sources):
    assert tile_sources(url) == sources


@pytest.mark.parametrize(
    "url",
    [
        "https://{s}.org/{z}/{x}/{y}.png",  # would allow every .org host
        "https://{host}/{z}/{x}/{y}.png",
        "https://tiles.example.org:{port}/{z}/{x}/{y}.png",
        "ftp://tiles.example.org/{z}/{x}/{y}.png",
        "data:image/png;base64,AAAA",
    ],
)
def test_a_tile_url_the_policy_cannot_name_is_refused(url):
    with pytest.raises(ImproperlyConfigured):
        tile_sources(url)


@pytest.mark.parametrize(("secure", "origin"), [(False, "ws://"), (True, "wss://")])
def test_the_socket_origin_is_the_pages_host_with_its_scheme(settings, secure, origin):
    settings.ALLOWED_HOSTS = ["track.example.com"]
    request = RequestFactory().get("/", HTTP_HOST="track.example.com:8443", secure=secure)
    assert socket_origin(request) == f"{origin}track.example.com:8443"


def test_an_unknown_host_gets_no_socket_origin(settings):
    settings.ALLOWED_HOSTS = ["track.example.com"]
    request = RequestFactory().get("/", HTTP_HOST="evil.example.net")
    assert socket_origin(request) is None


def test_pages_name_their_socket_origin_in_connect_src(client):
    response = client.get("/accounts/login/", HTTP_HOST="localhost:8000")
    directives = [part.split() for part in response["Content-Security-Policy"].split(";")]
    assert ["connect-src", "'self'", "ws://localhost:8000"] in directives


INLINE = {
    "an inline script": re.compile(r"<script(?![^>]*\ssrc=)[^>]*>", re.I),
    "a style element": re.compile(r"<style\b", re.I),
    "a style attribute": re.compile(r"\sstyle\s*=", re.I),
    "an event handler attribute": re.compile(r"\son[a-z]+\s*=", re.I),
    "a javascript: URL": re.compile(r"javascript:", re.I),
}


@pytest.mark.parametrize(
    "template", sorted(TEMPLATES.rglob("*.html")), ids=lambda path: str(path.relative_to(TEMPLATES))
)
def test_no_template_holds_anything_inline(template):
    """Scripts and styles come from static files; data reaches scripts through json_script,
    whose <script type="application/json"> is never run."""
    text = template.read_text()
    found = [what for what, pattern in INLINE.items() if pattern.search(text)]
    assert not found, f"{template.name} holds {', '.join(found)}: the policy blocks it"


def test_a_refused_form_gets_our_page_not_djangos_inline_styled_one():
    response = Client(enforce_csrf_checks=True).post("/accounts/login/", {"username": "ann"})
    assert response.status_code == 403
    assert b"Form refused" in response.content and b"<style" not in response.content
