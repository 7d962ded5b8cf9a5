"""The device side on its own: acks wait on every step, failed batches are kept, resends wait."""

import asyncio

import pytest

from tracking.devices import DeviceSide
from tracking.outage import Outage
from tracking.state import InMemoryRelayState

pytestmark = [pytest.mark.timeout(10), pytest.mark.usefixtures("settings")]


class Device:
    def __init__(self):
        self.acks: list[int] = []

    async def acknowledge(self, seq):
        self.acks.append(seq)

    async def close_with(self, code):
        pass


class Step:
    """A hand-off step that records what it took, and fails while `failing`."""

    def __init__(self):
        self.failing = False
        self.taken: list[dict] = []
        self.gate: asyncio.Event | None = None  # when set, the step waits for it

    async def __call__(self, batches):
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise ConnectionError("down")
        self.taken.append({t: dict(b.positions) for t, b in batches.items()})


@pytest.fixture
async def side(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    publish, store = Step(), Step()
    side = DeviceSide(
        state=InMemoryRelayState(),
        state_outage=Outage("state"),
        layer_outage=Outage("channel layer"),
        steps=[publish, store],
    )
    side.publish, side.store = publish, store
    return side


async def connect(side, worker_id=7, team_id=1):
    device = Device()
    await side.worker_connected(device, team_id=team_id, worker_id=worker_id, name="Ann")
    return device


def send(side, device, ts, seq, worker_id=7, team_id=1):
    position = {"lat": 1.0, "lng": 2.0, "ts": ts, "seq": seq}
    side.positions_received(
        device, team_id=team_id, worker_id=worker_id, positions=[position], ack_seq=seq
    )


@pytest.mark.parametrize("failing", ["publish", "store"])
async def test_an_ack_waits_for_every_step_and_a_failed_batch_is_kept(side, failing):
    device = await connect(side)
    send(side, device, ts=10.0, seq=1)
    getattr(side, failing).failing = True
    assert await side.hand_off() is False
    assert device.acks == []
    getattr(side, failing).failing = False
    send(side, device, ts=11.0, seq=2)
    assert await side.hand_off() is True
    assert device.acks == [1, 2]  # the kept batch's ack first
    # Both steps took the newest position of the worker, once.
    assert side.publish.taken[-1] == {1: {7: {"lat": 1.0, "lng": 2.0, "ts": 11.0, "seq": 2}}}
    assert side.store.taken[-1] == side.publish.taken[-1]


async def test_a_resend_is_taken_once_and_acknowledged_with_its_original(side):
    device = await connect(side)
    send(side, device, ts=10.0, seq=1)
    side.store.failing = True
    assert await side.hand_off() is False
    send(side, device, ts=10.0, seq=1)  # the device resends: a duplicate
    send(side, device, ts=10.0, seq=1)  # twice
    assert await side.hand_off() is False
    assert device.acks == []
    side.store.failing = False
    assert await side.hand_off() is True
    assert device.acks == [1]  # one ack for the frame however often it came
    original = {1: {7: {"lat": 1.0, "lng": 2.0, "ts": 10.0, "seq": 1}}}
    assert side.store.taken == [original]
    # Published again with each retry (the managers' replicas drop what they delivered), but
    # never as a new position.
    assert side.publish.taken == [original] * 3


async def test_a_duplicate_arriving_during_a_hand_off_waits_for_its_outcome(side):
    device = await connect(side)
    send(side, device, ts=10.0, seq=1)
    side.publish.gate = asyncio.Event()
    side.publish.failing = True
    in_flight = asyncio.ensure_future(side.hand_off())
    await asyncio.sleep(0)
    send(side, device, ts=10.0, seq=1)  # resent while the original is in flight
    # A hand-off for the team alone (a socket closing) must not acknowledge the resend first.
    closing = asyncio.ensure_future(side.hand_off([1]))
    await asyncio.sleep(0)
    side.publish.gate.set()
    assert await in_flight is False
    assert await closing is False  # it took the original back with it, and failed too
    assert device.acks == []
    side.publish.failing = False
    assert await side.hand_off() is True
    assert device.acks == [1]


async def test_only_each_workers_newest_position_is_handed_on(side):
    ann, bo = await connect(side, 7), await connect(side, 8)
    for ts in (10.0, 12.0, 11.0):
        send(side, ann, ts=ts, seq=int(ts))
    send(side, bo, ts=10.5, seq=1, worker_id=8)
    assert await side.hand_off() is True
    assert {w: p["ts"] for w, p in side.publish.taken[-1][1].items()} == {7: 12.0, 8: 10.5}
    assert ann.acks == [10, 12, 11] and bo.acks == [1]


async def test_a_long_outage_keeps_a_bounded_number_of_waiting_acks(side, monkeypatch):
    monkeypatch.setattr("tracking.devices.MAX_WAITING_ACKS", 3)
    device = await connect(side)
    side.publish.failing = True
    for seq in range(1, 6):
        send(side, device, ts=10.0 + seq, seq=seq)
        assert await side.hand_off() is False
    side.publish.failing = False
    assert await side.hand_off() is True
    # The oldest were forgotten (their frames are resent), never acknowledged untaken.
    assert device.acks == [3, 4, 5]
