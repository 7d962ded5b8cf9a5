"""ASGI entry point: Channels consumers for WebSockets and the phone apps' uploads, Django for
every other HTTP request."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teamtrack.settings")
# Set Django up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from teamtrack.proxies import TrustedProxyHeaders  # noqa: E402
from tracking.routing import (  # noqa: E402
    http_urlpatterns,
    websocket_urlpatterns,
    worker_sockets_first,
)

application = TrustedProxyHeaders(
    worker_sockets_first(
        ProtocolTypeRouter(
            {
                "http": URLRouter([*http_urlpatterns, re_path(r"", django_asgi_app)]),
                "websocket": URLRouter(websocket_urlpatterns),
            }
        )
    )
)
