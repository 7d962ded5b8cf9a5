"""The manager side on its own, on a clock the test moves: merging, guards, slow sockets."""

import pytest
from channels.layers import get_channel_layer

from tracking import feed, protocol
from tracking.backpressure import WriteFlow
from tracking.outage import Outage
from tracking.state import InMemoryRelayState
from tracking.tests.clock import ManualClock
from tracking.tests.test_relay import StandInSocket
from tracking.watchers import ManagerSide, RelayUnavailable

pytestmark = [pytest.mark.timeout(10), pytest.mark.usefixtures("settings")]


@pytest.fixture
async def managers(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    side = ManagerSide(
        state=InMemoryRelayState(),
        state_outage=Outage("state"),
        layer_outage=Outage("channel layer"),
        slow_manager_timeout=30.0,
    )
    side.channel = "relay.test!1"
    side.spawn = lambda coroutine: coroutine.close()
    return side


def batch(*positions):
    return {
        "type": feed.POSITIONS_BATCH,
        "team_id": 1,
        "positions": [{"id": w, "lat": lat, "lng": 0.0, "ts": ts} for w, lat, ts in positions],
    }


async def watch(managers, socket):
    await managers.watch_team(socket, team_id=1, team_slug="t", roster=[(7, "Ann"), (8, "Bo")])
    assert (await socket.next("snapshot"))["team"] == "t"


async def test_what_arrives_from_every_replica_goes_out_as_one_frame_newest_per_worker(managers):
    socket = StandInSocket()
    await watch(managers, socket)
    await managers.take_message(batch((7, 1.0, 10.0), (8, 5.0, 10.0)))  # from one replica
    await managers.take_message(batch((7, 2.0, 11.0)))  # from another
    await managers.take_message(batch((7, 0.5, 9.0)))  # late and older: never delivered
    await managers.deliver_all()
    frame = await socket.next("positions")
    assert {p["id"]: p["lat"] for p in frame["positions"]} == {7: 2.0, 8: 5.0}
    assert socket.frames.empty()
    await managers.take_message(batch((7, 2.0, 11.0)))  # a resend through another replica
    await managers.deliver_all()
    assert socket.frames.empty()


async def test_a_socket_that_stops_reading_is_held_then_closed_by_the_clock(managers):
    clock = ManualClock()
    flow = WriteFlow(clock=clock.monotonic)
    slow, fast = StandInSocket(write_flow=flow), StandInSocket()
    await watch(managers, slow)
    await watch(managers, fast)
    flow.pauseProducing()
    await clock.advance(29.0)
    await managers.take_message(batch((7, 1.0, 10.0)))
    await managers.deliver_all()
    assert (await fast.next("positions"))["positions"][0]["lat"] == 1.0
    assert slow.closed_with_code is None and slow in managers.held
    await clock.advance(2.0)  # past the 30 s the side waits for
    await managers.take_message(batch((7, 2.0, 11.0)))
    await managers.deliver_all()
    assert slow.closed_with_code == protocol.CLOSE_TOO_SLOW
    assert slow not in managers.sockets(1) and slow not in managers.held


async def test_catch_up_delivers_what_the_state_has_and_the_maps_were_not_sent(managers):
    socket = StandInSocket()
    await watch(managers, socket)
    await managers.take_message(batch((7, 1.0, 10.0)))
    await managers.deliver_all()
    await socket.next("positions")
    # Published while this replica's subscription was down: only the state has it.
    await managers.state.store_latest({1: {7: {"lat": 3.0, "lng": 0.0, "ts": 12.0}}})
    await managers.state.store_latest({1: {8: {"lat": 4.0, "lng": 0.0, "ts": 12.0}}})
    await managers.catch_up()
    await managers.deliver_all()
    frame = await socket.next("positions")
    assert {p["id"]: p["lat"] for p in frame["positions"]} == {7: 3.0, 8: 4.0}
    await managers.catch_up()  # nothing newer: nothing sent again
    await managers.deliver_all()
    assert socket.frames.empty()


async def test_catch_up_tells_earlier_sockets_what_a_later_snapshot_already_shows(managers):
    earlier = StandInSocket()
    await watch(managers, earlier)  # nobody online yet
    await managers.state.connection_opened(1, 7)  # Ann comes online; the message is lost
    later = StandInSocket()
    assert [w["online"] for w in (await watch_snapshot(managers, later))["workers"]] == [
        True,
        False,
    ]
    await managers.catch_up()
    assert await earlier.next("presence") == {
        "type": "presence",
        "id": 7,
        "name": "Ann",
        "online": True,
    }


async def watch_snapshot(managers, socket):
    await managers.watch_team(socket, team_id=1, team_slug="t", roster=[(7, "Ann"), (8, "Bo")])
    return await socket.next("snapshot")


async def test_a_failed_join_is_forgotten_so_the_next_socket_joins_anew(managers, monkeypatch):
    layer = get_channel_layer()
    original = layer.group_add

    async def down(group, channel):
        raise ConnectionError("channel layer down")

    monkeypatch.setattr(layer, "group_add", down)
    with pytest.raises(RelayUnavailable):
        await watch(managers, StandInSocket())
    monkeypatch.setattr(layer, "group_add", original)
    socket = StandInSocket()
    await watch(managers, socket)  # not refused for ever with the first join's failure
    assert managers.sockets(1) == [socket]
