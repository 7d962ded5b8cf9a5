"""Routes: a device socket is served by its consumer's coroutine alone, with no router's or
wrapper's coroutine kept alive beside it (tracking.routing.worker_sockets_first)."""

from teamtrack.asgi import application
from tracking.consumers import WorkerConsumer


def websocket_scope(path: str) -> dict:
    return {"type": "websocket", "path": path, "headers": [], "client": ("203.0.113.9", 5000)}


async def never(*args):
    raise AssertionError("the application ran; only its coroutine was to be made")


def test_a_device_socket_is_the_consumers_own_coroutine():
    coroutine = application(websocket_scope("/ws/worker/"), never, never)
    try:
        assert coroutine.cr_code is WorkerConsumer.__call__.__code__
    finally:
        coroutine.close()


def test_other_sockets_and_requests_still_go_through_the_routers():
    scopes = [
        websocket_scope("/ws/teams/alpha/"),
        websocket_scope("/ws/worker"),  # not the device path: the routers answer (4404)
        {"type": "http", "path": "/", "headers": [], "client": ("203.0.113.9", 5000)},
    ]
    for scope in scopes:
        coroutine = application(scope, never, never)
        try:
            assert coroutine.cr_code is not WorkerConsumer.__call__.__code__
        finally:
            coroutine.close()
