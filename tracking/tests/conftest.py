"""Helpers to open worker and manager sockets on the real ASGI application in-process."""

import json
import uuid
from urllib.parse import unquote, urlsplit

import pytest
from channels.layers import get_channel_layer
from channels.testing import ApplicationCommunicator, WebsocketCommunicator
from django.conf import settings as django_settings

from teamtrack.asgi import application
from tracking.limits import RedisLimits, get_limits
from tracking.relay import get_relay
from tracking.state import RedisRelayState
from tracking.tests.kafka_broker import kafka_broker, replicas  # noqa: F401 - fixtures

ORIGIN = (b"origin", b"http://localhost")


class Socket:
    """A WebsocketCommunicator that speaks JSON and knows our close codes."""

    def __init__(self, path: str, headers: list[tuple[bytes, bytes]]):
        self.communicator = WebsocketCommunicator(application, path, headers=headers)
        self.path = path
        self.closed = False

    async def connect(self):
        connected, _ = await self.communicator.connect(timeout=3)
        return connected

    async def send(self, frame):
        text = frame if isinstance(frame, str) else json.dumps(frame)
        await self.communicator.send_to(text_data=text)

    async def receive(self, timeout: float = 2):
        output = await self.communicator.receive_output(timeout)
        assert output["type"] == "websocket.send", f"expected a frame, got {output}"
        return json.loads(output["text"])

    async def receive_type(self, frame_type: str, timeout: float = 2):
        """Return the next frame of this type, skipping others (presence while waiting for data)."""
        while True:
            frame = await self.receive(timeout)
            if frame["type"] == frame_type:
                return frame

    async def closed_with(self, timeout: float = 2):
        output = await self.communicator.receive_output(timeout)
        assert output["type"] == "websocket.close", f"expected a close, got {output}"
        # Like daphne, tell the application the socket is gone, so that it cleans up.
        await self.close(output.get("code", 1000))
        return output.get("code")

    async def nothing(self, timeout: float = 0.3) -> bool:
        return await self.communicator.receive_nothing(timeout)

    async def close(self, code: int = 1000):
        if not self.closed:
            self.closed = True
            await self.communicator.disconnect(code)


class Answer:
    """An HTTP response of the application: status, body and headers."""

    def __init__(self, start: dict, body: bytes):
        self.status_code = start["status"]
        self.content = body
        self.headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}

    def json(self):
        return json.loads(self.content)

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]


class HttpClient:
    """Requests to the real ASGI application, with the scope daphne gives it (a client address
    too), so that they take the same routes as in production (the phone apps' consumers)."""

    def __init__(self, address: str = "127.0.0.1"):
        self.address = address

    async def request(self, method, path, data=b"", content_type="", headers=None, timeout=20):
        parts = urlsplit(path)
        body = data.encode() if isinstance(data, str) else data
        header_list = [(b"content-type", content_type.encode())] if content_type else []
        header_list += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": method,
            "path": unquote(parts.path),
            "raw_path": parts.path.encode(),
            "query_string": parts.query.encode(),
            "root_path": "",
            "scheme": "http",
            "headers": [(b"host", b"testserver"), *header_list],
            "client": (self.address, 50000),
            "server": ("testserver", 80),
        }
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "http.request", "body": body})
        start = await communicator.receive_output(timeout)
        content = b""
        while True:
            chunk = await communicator.receive_output(timeout)
            content += chunk.get("body", b"")
            if not chunk.get("more_body"):
                break
        await communicator.wait(timeout)
        return Answer(start, content)

    async def get(self, path, **kwargs):
        return await self.request("GET", path, **kwargs)

    async def post(self, path, data=b"", **kwargs):
        return await self.request("POST", path, data, **kwargs)

    async def put(self, path, data=b"", **kwargs):
        return await self.request("PUT", path, data, **kwargs)


@pytest.fixture
async def open_worker():
    """Open worker sockets: with a Bearer token, or none (then authenticate by frame)."""
    sockets = []

    async def opener(token: str | None = None, path: str = "/ws/worker/"):
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        socket = Socket(path, headers)
        sockets.append(socket)
        assert await socket.connect()
        return socket

    yield opener
    for socket in sockets:
        await socket.close()


@pytest.fixture
async def open_manager():
    """Open a manager socket for a team with a session cookie (or none) and an Origin."""
    sockets = []

    async def opener(slug: str, cookie: str | None, origin=ORIGIN):
        headers = [(b"host", b"localhost"), *([origin] if origin else [])]
        if cookie:
            headers.append((b"cookie", f"sessionid={cookie}".encode()))
        socket = Socket(f"/ws/teams/{slug}/", headers)
        sockets.append(socket)
        socket.accepted = await socket.connect()
        return socket

    yield opener
    for socket in sockets:
        await socket.close()


@pytest.fixture(params=["memory", "redis", "redis-core", "kafka"])
async def layer_kind(request, settings):
    """Run a test on each channel layer, with the relay state that goes with it."""
    kind = request.param
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    settings.CHANNEL_LAYER = kind
    layer = dict(django_settings.CHANNEL_LAYER_BACKENDS[kind])
    if kind == "kafka":
        broker = request.getfixturevalue("kafka_broker")
        layer["CONFIG"] = {
            **layer["CONFIG"],
            **broker.layer_config(),
            "topic": prefix,
        }
    elif kind != "memory":
        layer["CONFIG"] = {**layer["CONFIG"], "prefix": prefix}
    settings.CHANNEL_LAYERS = {"default": layer}
    settings.TEAMTRACK_RELAY_STATE = "memory" if kind == "memory" else "redis"
    settings.REDIS_PREFIX = prefix
    yield kind
    relay = get_relay()
    relay.stop()
    if kind != "memory":
        assert isinstance(relay.state, RedisRelayState)  # the test really went through Redis
        await relay.state.redis.delete(*(await relay.state.redis.keys(f"{prefix}:*")) or [prefix])
        await relay.state.close()
        limits = get_limits()
        if isinstance(limits, RedisLimits):
            await limits.redis.close()  # left open, it warns when collected, in a later test
        layer = get_channel_layer()
        await layer.flush()
        if hasattr(layer, "close_pools"):  # channels_redis' core layer keeps its pools
            await layer.close_pools()
