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

WORKER_SOCKET_PATH = "/ws/worker/"


def worker_sockets_first(app):
    """Wrap the application so that a device socket (WORKER_SOCKET_PATH) starts its consumer
    directly, and everything else goes to `app`.

    Thousands of idle devices hold that socket open. Each router or wrapper that awaits the
    consumer keeps a coroutine of its own (and the router a copy of the scope) alive beside it
    for the socket's life: together about 2 KB a socket, a tenth of what an idle socket costs
    (docs/performance.md). This returns the consumer's coroutine, and so has none of its own.
    """

    def route(scope, receive, send):
        if scope["type"] == "websocket" and scope["path"] == WORKER_SOCKET_PATH:
            return WorkerConsumer()(scope, receive, send)
        return app(scope, receive, send)

    route._asgi_single_callable = True  # an ASGI 3 application, though not a coroutine function
    return route
