"""Which pages may open a manager socket: the site's own (scheme, host and port, as Django's CSRF
check compares them) and the origins of CSRF_TRUSTED_ORIGINS; never a page served on another
port or scheme of the same host, which a host-only check let in."""

from channels.security.websocket import OriginValidator
from django.conf import settings
from django.http.request import split_domain_port, validate_host


class SameOriginValidator:
    """Refuses (403) a socket whose Origin is not the site's own or a trusted one."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        allowed = list(settings.CSRF_TRUSTED_ORIGINS)
        host = next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"), "")
        domain, _ = split_domain_port(host)
        if domain and validate_host(domain, settings.ALLOWED_HOSTS):
            # Behind a TLS terminator nginx says http: list the https origin in
            # CSRF_TRUSTED_ORIGINS, as Django's own CSRF check needs.
            secure = scope.get("scheme") in ("wss", "https")
            allowed.append(f"{'https' if secure else 'http'}://{host}")
        return await OriginValidator(self.application, allowed)(scope, receive, send)
