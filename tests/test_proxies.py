"""X-Forwarded-For and X-Forwarded-Proto count only from TRUSTED_PROXIES (teamtrack/proxies.py)."""

import pytest

from teamtrack.proxies import TrustedProxyHeaders, forwarded_client

pytestmark = pytest.mark.usefixtures("trusted")


@pytest.fixture
def trusted(settings):
    settings.TRUSTED_PROXIES = ["127.0.0.1", "10.1.0.0/16"]


async def seen_scope(client: str, headers: dict[str, str], kind: str = "http") -> dict:
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    scope = {
        "type": kind,
        "scheme": "http" if kind == "http" else "ws",
        "client": (client, 40000),
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
    }
    await TrustedProxyHeaders(app)(scope, None, None)
    return seen


async def test_a_trusted_proxy_names_the_client_and_the_scheme():
    scope = await seen_scope(
        "127.0.0.1", {"x-forwarded-for": "203.0.113.7", "x-forwarded-proto": "https"}
    )
    assert scope["client"] == ("203.0.113.7", 0)
    assert scope["scheme"] == "https"
    socket = await seen_scope("10.1.2.3", {"x-forwarded-proto": "https"}, kind="websocket")
    assert socket["scheme"] == "wss" and socket["client"] == ("10.1.2.3", 40000)


async def test_anyone_else_keeps_their_own_address_and_loses_the_headers():
    scope = await seen_scope(
        "198.51.100.4",
        {"x-forwarded-for": "127.0.0.1", "X-Forwarded-Proto": "https", "host": "example.com"},
    )
    assert scope["client"] == ("198.51.100.4", 40000)
    assert scope["scheme"] == "http"
    # Django's SECURE_PROXY_SSL_HEADER and anything else reading headers see none of them.
    assert scope["headers"] == [(b"host", b"example.com")]


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("203.0.113.7", "203.0.113.7"),
        # A chain: the client's own claim (left) is not believed past the last trusted hop.
        ("127.0.0.1, 203.0.113.7", "203.0.113.7"),
        ("198.51.100.1, 203.0.113.7, 10.1.0.5", "203.0.113.7"),
        ("2001:db8::1", "2001:db8::1"),
        ("unknown", None),
        ("203.0.113.7:443", None),
        ("", None),
        ("10.1.0.5", None),  # only proxies: the nearest one is the client
    ],
)
def test_the_client_is_the_nearest_address_that_is_no_trusted_proxy(header, client):
    assert forwarded_client(header) == client


async def test_garbage_from_a_trusted_proxy_keeps_the_proxy_as_the_client():
    scope = await seen_scope("127.0.0.1", {"x-forwarded-for": "not an address"})
    assert scope["client"] == ("127.0.0.1", 40000)


async def test_a_dual_stack_listener_still_knows_the_proxy_and_joins_repeated_headers():
    # daphne on "::" reports IPv4 nginx as ::ffff:127.0.0.1; two header lines are one list.
    scope = {
        "type": "http",
        "client": ("::ffff:127.0.0.1", 40000),
        "headers": [(b"x-forwarded-for", b"203.0.113.7"), (b"x-forwarded-for", b"127.0.0.1")],
    }
    resolved = await seen_scope_of(scope)
    assert resolved["client"] == ("203.0.113.7", 0)


async def seen_scope_of(scope: dict) -> dict:
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    await TrustedProxyHeaders(app)(scope, None, None)
    return seen
