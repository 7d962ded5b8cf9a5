"""The relay on its own, with stand-in sockets: what no real socket can be made to do on cue."""

import asyncio
import json
import time

import pytest

from tracking.relay import Relay
from tracking.state import InMemoryRelayState

pytestmark = [pytest.mark.timeout(10), pytest.mark.usefixtures("settings")]


class ManagerSocket:
    def __init__(self):
        self.frames = asyncio.Queue()
        self.broken = False

    async def send_frame(self, text):
        if self.broken:
            raise ConnectionError("Attempt to send on a closed protocol")
        await self.frames.put(json.loads(text))

    async def next(self, frame_type):
        while True:
            frame = await asyncio.wait_for(self.frames.get(), 2)
            if frame["type"] == frame_type:
                return frame


@pytest.fixture
async def relay(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    relay = Relay(state=InMemoryRelayState(), flush_window=0.05)
    yield relay
    relay.stop()


def position(lat):
    return {"lat": lat, "lng": 2.0, "ts": time.time()}


async def test_a_manager_socket_that_fails_does_not_stop_the_others(relay):
    closing, watching = ManagerSocket(), ManagerSocket()
    for socket in (closing, watching):
        await relay.watch_team(socket, team_id=1, team_slug="t", roster=[(7, "Ann")])
        await socket.next("snapshot")
    closing.broken = True  # it closed between its last frame and the next one
    relay.positions_received(team_id=1, worker_id=7, positions=[position(1.0)])
    assert (await watching.next("positions"))["positions"][0]["lat"] == 1.0
    # The relay keeps delivering after the failure.
    relay.positions_received(team_id=1, worker_id=7, positions=[position(2.0)])
    assert (await watching.next("positions"))["positions"][0]["lat"] == 2.0
    assert closing not in relay.watchers[1]


async def test_each_window_gives_a_manager_one_frame_with_every_worker(relay):
    watching = ManagerSocket()
    await relay.watch_team(watching, team_id=1, team_slug="t", roster=[(7, "Ann"), (8, "Bo")])
    await watching.next("snapshot")
    await asyncio.sleep(relay.flush_window)  # start just after a delivery
    for lat in (1.0, 2.0, 3.0):
        relay.positions_received(team_id=1, worker_id=7, positions=[position(lat)])
        relay.positions_received(team_id=1, worker_id=8, positions=[position(lat + 10)])
    frame = await watching.next("positions")
    assert {p["id"]: p["lat"] for p in frame["positions"]} == {7: 3.0, 8: 13.0}
    assert watching.frames.empty()
