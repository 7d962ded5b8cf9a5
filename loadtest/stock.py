"""The stock Channels pattern, the benchmark's baseline: an ASGI application of its own.

    python -m teamtrack.serve loadtest.stock:application   (daphne, as every replica runs)

This is how a Channels tutorial relays positions: the device socket runs Channels' own dispatch
loop and sends every position to the team's group as its own message, and every manager socket
is in the group itself and encodes its own frame of each. `python -m loadtest.bench` runs it
beside TeamTrack's relay (teamtrack.asgi) and daphne's bare floor (loadtest/bare.py) on the same
cluster, so that every figure is a ratio measured side by side. Never serve it in production.

Last-known positions are still stored (and acknowledged) by TeamTrack's relay underneath, so
that the baseline differs only in the live feed.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "teamtrack.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from tracking import feed, protocol, relay  # noqa: E402
from tracking.consumers import NotFoundConsumer, TeamConsumer, WorkerConsumer  # noqa: E402

POSITION_SINGLE = "position.single"


class StockRelay(relay.Relay):
    def positions_received(self, socket, *, team_id, worker_id, positions, ack_seq=None) -> None:
        """Queue the newest position for the state, and send it to the group at once."""
        super().positions_received(
            socket, team_id=team_id, worker_id=worker_id, positions=positions, ack_seq=ack_seq
        )
        if positions:
            newest = max(positions, key=lambda position: position["ts"])
            message = {
                "type": POSITION_SINGLE,
                "position": protocol.feed_position(worker_id, newest),
            }
            send = get_channel_layer().group_send(feed.team_group(team_id), message)
            self._spawn(self.layer_outage.guard(send))

    async def publish(self, batches) -> None:
        """Send nothing: each position already went out on its own."""


def channels_loop(consumer, scope, receive, send):
    """Channels' own loop: a task, an asyncio.wait and a thread hop per frame or message."""
    return AsyncWebsocketConsumer.__call__(consumer, scope, receive, send)


class StockWorkerConsumer(WorkerConsumer):
    __call__ = channels_loop


class StockTeamConsumer(TeamConsumer):
    __call__ = channels_loop

    async def connect(self):
        await super().connect()
        if self.team is not None:
            # Each manager socket is a member of the team's group itself.
            await self.channel_layer.group_add(feed.team_group(self.team.id), self.channel_name)

    async def disconnect(self, code):
        await super().disconnect(code)
        if self.team is not None:
            await self.channel_layer.group_discard(feed.team_group(self.team.id), self.channel_name)

    async def presence_changed(self, event):
        """Nothing: the relay sends presence to every manager socket, as TeamTrack's does."""

    async def position_single(self, event):
        # One encode per manager socket, the cost the batched relay avoids.
        await self.send(text_data=protocol.encode_positions([event["position"]]))


relay.set_relay(relay.build_relay(StockRelay))

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(
            [
                path("ws/worker/", StockWorkerConsumer.as_asgi()),
                path(
                    "ws/teams/<slug:slug>/",
                    AllowedHostsOriginValidator(AuthMiddlewareStack(StockTeamConsumer.as_asgi())),
                ),
                re_path(r"", NotFoundConsumer.as_asgi()),
            ]
        ),
    }
)
