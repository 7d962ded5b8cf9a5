"""The relay on its own, with stand-in sockets: what no real socket can be made to do on cue.

Time is a ManualClock: waiting for a frame moves it on, so every window, delay and timeout here
is the relay's own arithmetic, never the machine's speed.
"""

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from teamtrack.control import close_manager_sockets
from tracking import protocol
from tracking.backpressure import WriteFlow
from tracking.relay import DELIVERY_DELAY, Relay
from tracking.state import InMemoryRelayState
from tracking.tests.clock import ManualClock, settle

pytestmark = [pytest.mark.timeout(10), pytest.mark.usefixtures("settings")]

UNREACHABLE_REDIS_LAYER = {
    "BACKEND": "tracking.layers.redis.RedisPubSubChannelLayer",
    "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
}


STEP = 0.01  # seconds of the test's clock per step while a test waits for a frame


class StandInSocket:
    """Records frames and closes; `broken` makes sends fail as daphne's do once a socket closed."""

    clock: ManualClock | None = None  # the relay fixture's: waiting for a frame moves it on

    def __init__(self, user_id: int = 1, write_flow: WriteFlow | None = None):
        self.user_id = user_id
        self.write_flow = write_flow
        self.frames = asyncio.Queue()
        self.closed_with_code: int | None = None
        self.broken = False

    async def send_frame(self, text, frame_type):
        if self.broken:
            raise ConnectionError("Attempt to send on a closed protocol")
        frame = json.loads(text)
        assert frame["type"] == frame_type
        await self.frames.put(frame)

    async def acknowledge(self, seq):
        if not self.broken:
            await self.frames.put({"type": "ack", "seq": seq})

    async def close_with(self, code):
        self.closed_with_code = code

    async def next(self, frame_type, timeout=2):
        """Return the next frame of this type, letting at most `timeout` seconds of the test's
        clock pass while none is there."""
        waited = 0.0
        while True:
            if self.clock is None:
                frame = await asyncio.wait_for(self.frames.get(), timeout)
            else:
                while self.frames.empty():
                    if waited >= timeout:
                        raise TimeoutError(f"no {frame_type} frame in {timeout} s")
                    await self.clock.advance(STEP)
                    waited += STEP
                frame = self.frames.get_nowait()
            if frame["type"] == frame_type:
                return frame

    def drain(self) -> list[dict]:
        frames = []
        while not self.frames.empty():
            frames.append(self.frames.get_nowait())
        return frames


@pytest.fixture
async def relay(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    clock = ManualClock()
    relay = Relay(
        state=InMemoryRelayState(), flush_window=0.05, slow_manager_timeout=0.5, clock=clock
    )
    StandInSocket.clock = clock
    yield relay
    StandInSocket.clock = None
    relay.stop()


def position(lat, ts=None, seq=None):
    entry = {"lat": lat, "lng": 2.0, "ts": time.time() if ts is None else ts}
    if seq is not None:
        entry["seq"] = seq
    return entry


async def watch(relay, socket, roster=((7, "Ann"),)):
    await relay.watch_team(socket, team_id=1, team_slug="t", roster=list(roster))
    return await socket.next("snapshot")


async def connect_device(relay, worker_id=7, name="Ann"):
    device = StandInSocket()
    await relay.worker_connected(device, team_id=1, worker_id=worker_id, name=name)
    return device


async def test_a_manager_socket_that_fails_does_not_stop_the_others(relay):
    closing, watching = StandInSocket(), StandInSocket()
    for socket in (closing, watching):
        await watch(relay, socket)
    device = await connect_device(relay)
    closing.broken = True  # it closed between its last frame and the next one
    relay.positions_received(device, team_id=1, worker_id=7, positions=[position(1.0)])
    assert (await watching.next("positions"))["positions"][0]["lat"] == 1.0
    # The relay keeps delivering after the failure.
    relay.positions_received(device, team_id=1, worker_id=7, positions=[position(2.0)])
    assert (await watching.next("positions"))["positions"][0]["lat"] == 2.0
    assert closing not in relay.managers.sockets(1)


async def test_each_window_gives_a_manager_one_frame_with_every_worker(relay):
    watching = StandInSocket()
    await watch(relay, watching, roster=[(7, "Ann"), (8, "Bo")])
    ann, bo = await connect_device(relay, 7, "Ann"), await connect_device(relay, 8, "Bo")
    await watching.next("presence")
    await watching.next("presence")
    await relay.clock.advance(relay.flush_window)  # start just after a delivery
    for lat in (1.0, 2.0, 3.0):
        relay.positions_received(ann, team_id=1, worker_id=7, positions=[position(lat)])
        relay.positions_received(bo, team_id=1, worker_id=8, positions=[position(lat + 10)])
    frame = await watching.next("positions")
    assert {p["id"]: p["lat"] for p in frame["positions"]} == {7: 3.0, 8: 13.0}
    assert watching.frames.empty()


async def test_a_resent_position_is_acknowledged_again_but_relayed_once(relay):
    watching = StandInSocket()
    await watch(relay, watching)
    device = await connect_device(relay)
    sent = position(1.0, seq=5)
    relay.positions_received(device, team_id=1, worker_id=7, positions=[sent], ack_seq=5)
    assert (await watching.next("positions"))["positions"][0]["lat"] == 1.0
    assert await device.next("ack") == {"type": "ack", "seq": 5}
    # The device did not see the ack in time and sends the same position again.
    relay.positions_received(device, team_id=1, worker_id=7, positions=[sent], ack_seq=5)
    assert await device.next("ack") == {"type": "ack", "seq": 5}
    # Same seq, another ts: still the same report.
    relay.positions_received(
        device, team_id=1, worker_id=7, positions=[{**sent, "ts": sent["ts"] + 1}], ack_seq=5
    )
    await device.next("ack")
    await relay.clock.advance(3 * relay.flush_window)
    assert [f for f in watching.drain() if f["type"] == "positions"] == []


async def test_a_resend_through_another_replica_is_not_delivered_twice(relay):
    """The managers' relay drops a position of a ts it already delivered, wherever it came from."""
    watching = StandInSocket()
    await watch(relay, watching)
    sent = protocol.feed_position(7, position(1.0))
    for _ in range(2):
        await relay.dispatch({"type": "positions.batch", "team_id": 1, "positions": [sent]})
        await relay.clock.advance(2 * relay.flush_window)
    frames = [f for f in watching.drain() if f["type"] == "positions"]
    assert len(frames) == 1


async def test_acks_wait_for_the_channel_layer_to_take_the_positions(relay, settings):
    device = await connect_device(relay)
    relay.positions_received(
        device, team_id=1, worker_id=7, positions=[position(1.0, seq=1)], ack_seq=1
    )
    assert device.frames.empty()  # not before the tick
    assert await device.next("ack") == {"type": "ack", "seq": 1}
    # The channel layer goes away: the next frame is never acknowledged, so the device keeps it.
    settings.CHANNEL_LAYERS = {"default": UNREACHABLE_REDIS_LAYER}
    relay.positions_received(
        device, team_id=1, worker_id=7, positions=[position(2.0, seq=2)], ack_seq=2
    )
    await relay.clock.advance(relay.flush_window)
    for _ in range(500):  # the refused connection is real I/O: up to 5 s of it
        if relay.layer_outage.failing:
            break
        await asyncio.sleep(0.01)
    assert relay.layer_outage.failing
    with pytest.raises(TimeoutError):
        await device.next("ack", timeout=1.0)


async def test_a_manager_that_stops_reading_is_held_conflated_then_closed(relay):
    flow = WriteFlow(clock=relay.clock.monotonic)
    slow, fast = StandInSocket(write_flow=flow), StandInSocket()
    roster = [(7, "Ann"), (8, "Bo")]
    await watch(relay, slow, roster)
    await watch(relay, fast, roster)
    ann, bo = await connect_device(relay, 7, "Ann"), await connect_device(relay, 8, "Bo")
    slow.drain()
    flow.pauseProducing()  # what Twisted does when the socket's write buffer is full
    for lat in range(1, 6):
        relay.positions_received(ann, team_id=1, worker_id=7, positions=[position(lat)])
        relay.positions_received(bo, team_id=1, worker_id=8, positions=[position(lat + 10)])
        # The others get every window as usual.
        frame = await fast.next("positions")
        assert {p["id"]: p["lat"] for p in frame["positions"]} == {7: lat, 8: lat + 10}
    await relay.worker_disconnected(bo, team_id=1, worker_id=8)
    await fast.next("presence")
    assert slow.frames.empty()
    held = relay.managers.held[slow]
    assert set(held.positions) == {7, 8} and set(held.presence) == {8}  # one entry per worker
    flow.resumeProducing()  # drained: what it missed goes out, conflated
    frame = await slow.next("positions")
    assert {p["id"]: p["lat"] for p in frame["positions"]} == {7: 5, 8: 15}
    assert await slow.next("presence") == {
        "type": "presence",
        "id": 8,
        "name": "Bo",
        "online": False,
    }
    # Full again, for longer than the relay waits: closed with 4408 at the next frame.
    flow.pauseProducing()
    await relay.clock.advance(relay.managers.slow_manager_timeout + 0.1)
    relay.positions_received(ann, team_id=1, worker_id=7, positions=[position(6)])
    await fast.next("positions")
    await relay.clock.advance(2 * relay.flush_window)
    assert slow.closed_with_code == protocol.CLOSE_TOO_SLOW
    assert fast.closed_with_code is None
    assert slow not in relay.managers.held and slow not in relay.managers.sockets(1)


async def test_drain_sends_what_is_in_flight_then_closes_every_socket_4012(relay):
    watching = StandInSocket()
    await watch(relay, watching)
    device = await connect_device(relay)
    await watching.next("presence")
    relay.positions_received(
        device, team_id=1, worker_id=7, positions=[position(4.0, seq=9)], ack_seq=9
    )
    await relay.drain()  # before the tick
    assert (await watching.next("positions"))["positions"][0]["lat"] == 4.0
    assert await device.next("ack") == {"type": "ack", "seq": 9}
    assert device.closed_with_code == watching.closed_with_code == protocol.CLOSE_SERVICE_RESTART
    # The device reconnects elsewhere at once: no offline blink for its managers.
    await relay.worker_disconnected(device, team_id=1, worker_id=7)
    await relay.clock.advance(2 * relay.flush_window)
    assert [f for f in watching.drain() if f["type"] == "presence"] == []


async def test_logging_out_closes_that_users_manager_sockets_only(relay):
    ann_tab, ann_other_tab, bo_tab = StandInSocket(1), StandInSocket(1), StandInSocket(2)
    for socket in (ann_tab, ann_other_tab, bo_tab):
        await watch(relay, socket)
    await sync_to_async(close_manager_sockets)(1)
    for _ in range(50):
        if ann_tab.closed_with_code and ann_other_tab.closed_with_code:
            break
        await asyncio.sleep(0.02)
    assert (
        ann_tab.closed_with_code == ann_other_tab.closed_with_code == protocol.CLOSE_UNAUTHENTICATED
    )
    assert bo_tab.closed_with_code is None


async def test_a_presence_change_overtaken_by_a_newer_one_is_dropped(relay):
    """Replicas publish on their own connections: a reap's offline can arrive after the online of
    the worker's reconnect. Versions from the state put them back in order."""
    watching = StandInSocket()
    await watch(relay, watching)

    def presence(online, version):
        frame = protocol.encode_presence(7, "Ann", online)
        return {
            "type": "presence.changed",
            "team_id": 1,
            "worker_id": 7,
            "version": version,
            "text": frame,
        }

    await relay.dispatch(presence(True, 5))  # the reconnect
    await relay.dispatch(presence(False, 4))  # the reap, older, arriving late
    assert (await watching.next("presence"))["online"] is True
    await relay.clock.advance(2 * relay.flush_window)
    assert watching.drain() == []


async def test_a_presence_change_older_than_the_snapshot_is_dropped(relay):
    device = await connect_device(relay)  # version 1, before the manager's snapshot
    watching = StandInSocket()
    snapshot = await watch(relay, watching)
    assert snapshot["workers"][0]["online"] is True
    frame = protocol.encode_presence(7, "Ann", True)
    await relay.dispatch(
        {"type": "presence.changed", "team_id": 1, "worker_id": 7, "version": 1, "text": frame}
    )
    await relay.worker_disconnected(device, team_id=1, worker_id=7)
    assert (await watching.next("presence"))["online"] is False
    assert watching.drain() == []


async def test_the_tick_hands_on_at_each_boundary_and_delivers_later_on_the_injected_clock(
    settings,
):
    """Window timing, with no wall clock: the tick acknowledges at the boundary, and managers
    get the frame DELIVERY_DELAY of a window later, not before."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    clock = ManualClock(start=1000.0)
    relay = Relay(state=InMemoryRelayState(), flush_window=1.0, clock=clock)
    try:
        watching = StandInSocket()
        await watch(relay, watching)
        device = await connect_device(relay)
        await settle()
        watching.drain()
        relay.positions_received(
            device, team_id=1, worker_id=7, positions=[position(1.0, seq=3)], ack_seq=3
        )
        await clock.advance(0.99)
        assert device.frames.empty() and watching.frames.empty()  # before the boundary
        await clock.advance(0.02)  # the boundary: handed on and acknowledged
        assert device.drain() == [{"type": "ack", "seq": 3}]
        await settle()
        assert watching.drain() == []  # managers wait for every replica's message of the tick
        await clock.advance(DELIVERY_DELAY)
        (frame,) = watching.drain()
        assert frame["type"] == "positions" and frame["positions"][0]["lat"] == 1.0
    finally:
        relay.stop()


# ---------------------------------------------------------------- found in review: cancellation,
# outages, late joiners


class Gate:
    """Wraps a hand-off step so that it waits until the test opens the gate."""

    def __init__(self, step):
        self.step = step
        self.open = asyncio.Event()
        self.entered = asyncio.Event()

    async def __call__(self, batches):
        self.entered.set()
        await self.open.wait()
        await self.step(batches)


async def test_a_cancelled_disconnect_leaves_no_ghost_socket(relay):
    """daphne cancels an application still running 10 s after its client went
    (application_close_timeout). worker_disconnected waits for the hand-off lock (a slow tick:
    Redis socket_timeout 5 s, pool wait 20 s, Kafka message timeout 3 s); cancelled there, it
    never discards the socket: the worker stays in `workers`, its lease is renewed forever, and
    its managers never see it go offline."""
    watching = StandInSocket()
    await watch(relay, watching)
    device = await connect_device(relay)
    await watching.next("presence")
    gate = Gate(relay.publish)
    relay.devices.steps = [gate, relay.store_latest]
    relay.positions_received(device, team_id=1, worker_id=7, positions=[position(1.0)])
    ticking = asyncio.ensure_future(relay.tick())
    await gate.entered.wait()
    disconnecting = asyncio.ensure_future(relay.worker_disconnected(device, team_id=1, worker_id=7))
    await settle()
    disconnecting.cancel()  # daphne: "took too long to shut down and was killed"
    await settle()
    gate.open.set()
    await ticking
    assert device not in relay.devices.all_sockets()
    assert 7 not in relay.devices.workers_by_team().get(1, [])


async def test_an_ack_never_covers_a_position_that_a_cancelled_hand_off_dropped(relay):
    """hand_off pops the team's batch, then awaits the steps; cancelled there (the disconnect
    of the worker's old socket, killed by daphne), the batch is gone, but `worker.taken` still
    holds its position. The device's resend is then a 'duplicate', and its ack goes out with
    the next (empty) hand-off: an ack for a position neither published nor stored."""
    old = await connect_device(relay)
    new = await connect_device(relay)  # the device reconnected; its old socket is closing
    gate = Gate(relay.publish)
    relay.devices.steps = [gate, Gate(relay.store_latest)]  # Redis and Kafka both slow
    sent = position(5.0, ts=1_000.0, seq=1)
    relay.positions_received(old, team_id=1, worker_id=7, positions=[sent], ack_seq=1)
    disconnecting = asyncio.ensure_future(relay.worker_disconnected(old, team_id=1, worker_id=7))
    await gate.entered.wait()
    disconnecting.cancel()
    await settle()
    relay.devices.steps = [relay.publish, relay.store_latest]
    # The device resends what was never acknowledged.
    relay.positions_received(new, team_id=1, worker_id=7, positions=[sent], ack_seq=1)
    await relay.tick()
    acked = [frame["seq"] for frame in new.drain() if frame["type"] == "ack"]
    stored = relay.state.latest.get(1, {}).get(7)
    assert acked == [] or stored == sent, f"acked {acked}, state holds {stored}"


async def test_a_presence_change_lost_in_an_outage_reaches_the_maps_after_it(relay, monkeypatch):
    """The state records the worker offline, but the presence message could not be published;
    nothing retries it and catch_up restores positions only, so the map shows the worker online
    for as long as it stays open (reliability.md: after an outage every replica brings its maps
    up to date from the shared state)."""
    watching = StandInSocket()
    await watch(relay, watching, roster=[(7, "Ann"), (8, "Bo")])
    ann = await connect_device(relay, 7, "Ann")
    bo = await connect_device(relay, 8, "Bo")
    await watching.next("presence")
    await watching.next("presence")
    layer = get_channel_layer()
    original = layer.group_send

    async def down(group, message):
        raise ConnectionError("channel layer down")

    monkeypatch.setattr(layer, "group_send", down)
    await relay.worker_disconnected(ann, team_id=1, worker_id=7)
    assert relay.layer_outage.failing
    monkeypatch.setattr(layer, "group_send", original)
    # The layer is back: Bo's next position goes through, the outage ends, catch_up runs.
    relay.positions_received(bo, team_id=1, worker_id=8, positions=[position(3.0)])
    await relay.clock.advance(3.0)  # both rounds of catch_up
    presence = [f for f in watching.drain() if f["type"] == "presence" and f["id"] == 7]
    assert presence and presence[-1]["online"] is False


async def test_a_manager_joining_between_publish_and_state_write_misses_nothing(relay):
    """publish and store_latest run at once. A manager socket that joins after the publish was
    delivered here, but before the state write landed, gets a snapshot without the position and
    never the position itself (watch.delivered already has it): that map shows the worker where
    it was before, until its next report (or for good, if that was its last)."""
    first = StandInSocket()
    await watch(relay, first)
    device = await connect_device(relay)
    gate = Gate(relay.store_latest)
    relay.devices.steps = [relay.publish, gate]
    relay.positions_received(device, team_id=1, worker_id=7, positions=[position(9.0)])
    ticking = asyncio.ensure_future(relay.tick())
    await gate.entered.wait()
    await settle()  # the published batch reaches this replica's relay
    await relay.deliver()
    assert (await first.next("positions"))["positions"][0]["lat"] == 9.0
    late = StandInSocket()
    snapshot = await watch(relay, late)
    gate.open.set()
    await ticking
    seen = snapshot["workers"][0]["lat"] == 9.0
    for _ in range(20):
        if seen:
            break
        await relay.clock.advance(relay.flush_window)
        seen = any(
            f["type"] == "positions" and any(p["lat"] == 9.0 for p in f["positions"])
            for f in late.drain()
        )
    assert seen, "the late manager never got the worker's last position"


async def test_an_outage_of_the_channel_layer_is_not_ended_by_the_state_answering(relay):
    """One Outage serves the layer and the state. While the channel layer stays down (Kafka
    broker lost, Redis up), every successful lease renewal (or device connect) calls
    recovered(): 'reaches again' is logged, a catch_up task reads every watched team's state,
    and the next tick logs the outage again (reliability.md: one log line per outage)."""
    device = await connect_device(relay)
    layer = get_channel_layer()

    async def layer_down(group, message):
        raise ConnectionError("broker lost")

    layer.group_send = layer_down
    recoveries = []
    relay.layer_outage.on_recovery = lambda: recoveries.append(relay.clock.time())
    for lat in (1.0, 2.0, 3.0):
        relay.positions_received(device, team_id=1, worker_id=7, positions=[position(lat)])
        assert await relay.devices.hand_off() is False
        await relay.renew_and_reap()  # the state answers; the layer is still down
    assert relay.layer_outage.failing and not relay.state_outage.failing
    assert recoveries == []
