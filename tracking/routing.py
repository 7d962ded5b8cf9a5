"""WebSocket routes: devices authenticate with tokens, managers with their Django session."""

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.conf import settings
from django.urls import path, re_path

from tracking.backpressure import WriteFlowMiddleware
from tracking.consumers import NotFoundConsumer, TeamConsumer, WorkerConsumer

if settings.TEAMTRACK_RELAY_MODE == "stock":
    from tracking.stock import StockTeamConsumer as TeamConsumer
    from tracking.stock import StockWorkerConsumer as WorkerConsumer

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
