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


def is_trusted_proxy(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
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
                return str(ipaddress.ip_address(address))
            except ValueError:
                return None  # "unknown", a port, garbage: keep the proxy's own address
    return None


class TrustedProxyHeaders:
    """ASGI middleware: set scope["client"] and scope["scheme"] from a trusted proxy's headers."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            scope = self._resolve(scope)
        return await self.app(scope, receive, send)

    def _resolve(self, scope: dict) -> dict:
        client = scope.get("client") or ("", 0)
        headers = scope.get("headers") or []
        if not is_trusted_proxy(client[0]):
            kept = [(name, value) for name, value in headers if name.lower() not in FORWARDED]
            return {**scope, "headers": kept} if len(kept) != len(headers) else scope
        resolved = dict(scope)
        values = {name.lower(): value.decode("latin-1") for name, value in headers}
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
