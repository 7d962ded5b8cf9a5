"""The stock Channels pattern, kept only as the benchmark's baseline (RELAY_MODE=stock).

This is how a Channels tutorial relays positions: the device socket runs Channels' own dispatch
loop and sends every position to the team's group as its own message, and every manager socket
encodes its own frame of it. `python -m loadtest.bench` runs it beside the batched relay on the
same cluster, so that every figure is a ratio measured side by side. Never use it in production.

Last-known positions are still stored in batches by the relay underneath, so that the baseline
differs only in the live feed.
"""

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from tracking import protocol
from tracking.consumers import TeamConsumer, WorkerConsumer
from tracking.relay import Relay, team_group

POSITION_SINGLE = "position.single"


class StockRelay(Relay):
    def positions_received(self, socket, *, team_id, worker_id, positions, ack_seq=None) -> None:
        """Store the newest position in the next batch, and send it to the group at once."""
        super().positions_received(
            socket, team_id=team_id, worker_id=worker_id, positions=positions, ack_seq=ack_seq
        )
        if positions:
            newest = max(positions, key=lambda position: position["ts"])
            message = {
                "type": POSITION_SINGLE,
                "position": protocol.feed_position(worker_id, newest),
            }
            self._spawn(self._guard(get_channel_layer().group_send(team_group(team_id), message)))

    async def send_batches(self, batches: dict[int, dict[int, dict]]) -> bool:
        """Send nothing: each position already went out on its own."""
        return True


def channels_loop(consumer, scope, receive, send):
    """Channels' own loop: a task, an asyncio.wait and a thread hop per frame or message."""
    return AsyncWebsocketConsumer.__call__(consumer, scope, receive, send)


class StockWorkerConsumer(WorkerConsumer):
    serve = channels_loop


class StockTeamConsumer(TeamConsumer):
    serve = channels_loop

    async def connect(self):
        await super().connect()
        if self.team is not None:
            # Each manager socket is a member of the team's group itself.
            await self.channel_layer.group_add(team_group(self.team.id), self.channel_name)

    async def disconnect(self, code):
        await super().disconnect(code)
        if self.team is not None:
            await self.channel_layer.group_discard(team_group(self.team.id), self.channel_name)

    async def presence_changed(self, event):
        """Nothing: the relay sends presence to every manager socket, as in the batched mode."""

    async def position_single(self, event):
        # One encode per manager socket, the cost the batched relay avoids.
        await self.send(text_data=protocol.encode_positions([event["position"]]))
