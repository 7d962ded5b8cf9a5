"""Routes of the consumers: WebSockets (devices authenticate with tokens, managers with their
Django session) and the phone apps' HTTP endpoints, which go before Django's own."""

from channels.auth import AuthMiddlewareStack
from django.urls import path, re_path

from tracking.backpressure import WriteFlowMiddleware
from tracking.consumers import NotFoundConsumer, TeamConsumer, WorkerConsumer
from tracking.origins import SameOriginValidator
from tracking.phone_consumers import OsmAndConsumer, OwnTracksConsumer

# With or without the slash: the apps' users type the server URL.
http_urlpatterns = [
    re_path(r"^osmand/?$", OsmAndConsumer.as_asgi()),
    re_path(r"^owntracks/?$", OwnTracksConsumer.as_asgi()),
]

websocket_urlpatterns = [
    path("ws/worker/", WorkerConsumer.as_asgi()),
    path(
        "ws/teams/<slug:slug>/",
        # WriteFlowMiddleware first, while `send` is still daphne's (the session middleware wraps it).
        WriteFlowMiddleware(SameOriginValidator(AuthMiddlewareStack(TeamConsumer.as_asgi()))),
    ),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
