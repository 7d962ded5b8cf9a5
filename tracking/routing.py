"""WebSocket routes: devices authenticate with tokens, managers with their Django session."""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path, re_path

from tracking.backpressure import WriteFlowMiddleware
from tracking.consumers import NotFoundConsumer, TeamConsumer, WorkerConsumer

websocket_urlpatterns = [
    path("ws/worker/", WorkerConsumer.as_asgi()),
    path(
        "ws/teams/<slug:slug>/",
        # WriteFlowMiddleware first, while `send` is still daphne's (the session middleware wraps it).
        WriteFlowMiddleware(
            AllowedHostsOriginValidator(AuthMiddlewareStack(TeamConsumer.as_asgi()))
        ),
    ),
    re_path(r"", NotFoundConsumer.as_asgi()),
]
