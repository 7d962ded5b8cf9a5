"""A daphne replica started as production starts it, with DEBUG unset: no debug page for anyone,
and plain HTTP sent to HTTPS except the probes that monitoring calls over plain HTTP."""

import http.client

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

# What Django's debug pages show, and its plain 400 never does.
DEBUG_PAGE = ("Traceback", "settings", "DEBUG = True", "DisallowedHost", "ALLOWED_HOSTS")


def get(port: int, path: str, **headers: str) -> tuple[int, http.client.HTTPMessage, str]:
    """GET over plain HTTP with these headers; return the status, headers and body."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read().decode()
    finally:
        connection.close()


@pytest.fixture
def replica(server):
    server.use_production_settings()
    server.start_daphne(alpha="ann")
    return server


def test_an_unknown_host_gets_a_plain_400_not_the_debug_page(replica):
    status, _, body = get(replica.port, "/accounts/login/", Host="attacker.example.net")
    assert status == 400
    assert [text for text in DEBUG_PAGE if text in body] == []
    status, _, body = get(replica.port, "/no/such/page/", Host="attacker.example.net")
    assert status == 400
    assert [text for text in DEBUG_PAGE if text in body] == []


def test_plain_http_pages_go_to_https_but_the_probes_answer(replica):
    host = f"127.0.0.1:{replica.port}"
    status, headers, _ = get(replica.port, "/accounts/login/", Host=host)
    assert status == 301
    assert headers["Location"] == f"https://{host}/accounts/login/"
    for probe in ("/healthz", "/readyz", "/metrics"):
        assert get(replica.port, probe, Host=host)[0] == 200, probe
