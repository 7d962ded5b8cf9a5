"""The Content-Security-Policy header (django-csp; the policy is CONTENT_SECURITY_POLICY in
settings): where the map tiles the policy allows come from, and the page's own socket origin,
which this middleware names in connect-src."""

import re
from urllib.parse import urlsplit

from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost, ImproperlyConfigured

PLACEHOLDER = re.compile(r"\{[^}]*\}")


def tile_sources(url: str) -> list[str]:
    """Return the CSP source of a Leaflet tile URL template's origin (none for no tiles, or for
    tiles on our own origin).

    A host label holding a placeholder, as in https://{s}.tile.example.org/..., becomes CSP's one
    wildcard, on the left: https://*.tile.example.org (labels left of it go into it too).
    """
    if not url:
        return []
    parts = urlsplit(url)
    if not parts.netloc:
        if parts.scheme:
            raise ImproperlyConfigured(f"MAP_TILE_URL must be an http(s) URL, not {url!r}.")
        return []  # a path: tiles served by TeamTrack's own origin, which 'self' allows
    if parts.scheme not in ("http", "https", ""):
        raise ImproperlyConfigured(f"MAP_TILE_URL must be an http(s) URL, not {url!r}.")
    labels = (parts.hostname or "").split(".")
    templated = [index for index, label in enumerate(labels) if PLACEHOLDER.search(label)]
    if templated:
        fixed = labels[templated[-1] + 1 :]
        if len(fixed) < 2:  # "*.org", or a host that is all placeholder, would allow too much
            raise ImproperlyConfigured(
                f"MAP_TILE_URL's host must be a fixed domain (a {{s}} subdomain at most): {url!r}"
            )
        host = ".".join(["*", *fixed])
    else:
        host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        raise ImproperlyConfigured(f"MAP_TILE_URL's port must be a number: {url!r}") from None
    scheme = f"{parts.scheme}://" if parts.scheme else ""  # none: the page's own scheme
    return [f"{scheme}{host}{port}"]


def socket_origin(request) -> str | None:
    """Return the origin of the page's own sockets (ws://host or wss://host, as static/js/util.js
    builds their URLs), or None when the request's host is not one we serve."""
    try:
        host = request.get_host()  # checked against ALLOWED_HOSTS: no characters CSP would parse
    except DisallowedHost:
        return None
    return f"{'wss' if request.is_secure() else 'ws'}://{host}"


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """django-csp's middleware, with the page's own socket origin added to connect-src.

    CSP Level 3's 'self' allows it already, but Safari before 16 (WebKit bug 201591) never matched
    'self' to ws: or wss:, and field workers' phones keep old iPhones: the tracking page's socket
    would be refused there.
    """

    def get_policy_parts(self, request, response, report_only=False) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        origin = socket_origin(request)
        if origin is not None:
            update = dict(parts.update or {})
            update["connect-src"] = [*update.get("connect-src", []), origin]
            parts.update = update
        return parts
