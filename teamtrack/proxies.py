"""Who the client is, behind nginx: X-Forwarded-For and X-Forwarded-Proto are believed only
from TRUSTED_PROXIES.

daphne's own `--proxy-headers` believes them from anyone who reaches a replica, so a client
that got past nginx (or inside the cluster's network) could pose as 127.0.0.1 for /metrics or
take another address's failed-login budget. This middleware wraps the whole application instead:
from a trusted proxy, the client becomes the nearest forwarded address that is not itself a
trusted proxy; from anyone else, the forwarded headers are removed before Django or a consumer
can read them.
"""

import ipaddress
from functools import cache

from django.conf import settings

FORWARDED_FOR = b"x-forwarded-for"
FORWARDED_PROTO = b"x-forwarded-proto"
FORWARDED = (FORWARDED_FOR, FORWARDED_PROTO, b"x-forwarded-port", b"x-forwarded-host")


@cache
def _trusted_networks(
    networks: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(network, strict=False) for network in networks)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parse an address; an IPv4 one as a dual-stack listener reports it (::ffff:a.b.c.d) is
    itself."""
    ip = ipaddress.ip_address(address.strip())
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_trusted_proxy(address: str) -> bool:
    try:
        ip = _ip(address)
    except ValueError:
        return False
    return any(ip in network for network in _trusted_networks(tuple(settings.TRUSTED_PROXIES)))


def forwarded_client(forwarded_for: str) -> str | None:
    """The client a chain of trusted proxies saw: the rightmost address not itself a proxy."""
    for address in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not address:
            return None
        if not is_trusted_proxy(address):
            try:
                return str(_ip(address))
            except ValueError:
                return None  # "unknown", a port, garbage: keep the proxy's own address
    return None


class TrustedProxyHeaders:
    """ASGI middleware: set scope["client"] and scope["scheme"] from a trusted proxy's headers.

    It returns the wrapped application's coroutine rather than awaiting it in one of its own,
    which would stay alive beside every idle socket (tracking.routing.worker_sockets_first)."""

    _asgi_single_callable = True  # an ASGI 3 application, though __call__ is not async

    def __init__(self, app):
        self.app = app

    def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = self._resolve(scope)
        return self.app(scope, receive, send)

    def _resolve(self, scope: dict) -> dict:
        client = scope.get("client") or ("", 0)
        headers = scope.get("headers") or []
        if not is_trusted_proxy(client[0]):
            kept = [(name, value) for name, value in headers if name.lower() not in FORWARDED]
            return {**scope, "headers": kept} if len(kept) != len(headers) else scope
        resolved = dict(scope)
        values: dict[bytes, str] = {}
        for name, value in headers:  # several lines of one header are one list (RFC 9110)
            name = name.lower()
            text = value.decode("latin-1")
            values[name] = f"{values[name]}, {text}" if name in values else text
        address = forwarded_client(values.get(FORWARDED_FOR, ""))
        if address is not None:
            resolved["client"] = (address, 0)
        proto = values.get(FORWARDED_PROTO, "").strip().lower()
        if proto in ("http", "https"):
            secure = proto == "https"
            if scope["type"] == "websocket":
                resolved["scheme"] = "wss" if secure else "ws"
            else:
                resolved["scheme"] = proto
        return resolved
