"""A socket's cumulative acks (tracking.acks): at most one per interval, and never an ack of N
while a frame with a seq up to N that the socket took is not yet safe."""

import asyncio
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracking import acks as acks_module
from tracking.acks import DueAcks, SocketAcks
from tracking.tests.clock import ManualClock, settle

TICK = 0.1  # the relay's flush window: held-back acks go out on its ticks

pytestmark = pytest.mark.timeout(30)


class Device:
    """The acks a socket sent, in order, with the relay's ticks on a manual clock."""

    def __init__(self, interval: float = 1.0):
        self.clock = ManualClock()
        self.due = DueAcks()
        self.sent: list[int] = []
        self.acks = SocketAcks(self.send, interval=interval, due=self.due, clock=self.clock)

    async def send(self, seq: int) -> None:
        self.sent.append(seq)

    async def advance(self, seconds: float) -> None:
        """Let time pass, the relay ticking on every multiple of TICK."""
        end = self.clock.time() + seconds
        while (tick := (math.floor(self.clock.time() / TICK + 1e-9) + 1) * TICK) <= end + 1e-9:
            await self.clock.advance(tick - self.clock.time())
            await self.due.send_due(self.clock.time())
        await self.clock.advance(end - self.clock.time())


async def test_the_first_safe_frame_is_acknowledged_at_once():
    device = Device()
    device.acks.received(1)
    await device.acks.frame_safe(1)
    assert device.sent == [1]


async def test_frames_safe_within_the_interval_share_one_ack_at_its_end():
    device = Device(interval=1.0)
    for seq in (1, 2, 3, 4):
        device.acks.received(seq)
    await device.acks.frame_safe(1)
    await device.advance(0.3)
    await device.acks.frame_safe(2)
    await device.advance(0.3)
    await device.acks.frame_safe(3)
    await device.acks.frame_safe(4)
    assert device.sent == [1]
    await device.advance(0.39)
    assert device.sent == [1]
    await device.advance(0.01)
    assert device.sent == [1, 4]


async def test_no_ack_goes_out_when_nothing_new_is_safe():
    device = Device()
    device.acks.received(1)
    await device.acks.frame_safe(1)
    await device.advance(5)
    await device.acks.flush()
    assert device.sent == [1]


async def test_a_frame_not_yet_safe_holds_back_the_acks_of_later_ones():
    device = Device(interval=0)
    for seq in (1, 2, 3):
        device.acks.received(seq)
    await device.acks.frame_safe(1)
    await device.acks.frame_safe(3)
    assert device.sent == [1]  # 2 is still on its way: 3 may not be said
    await device.acks.frame_safe(2)
    assert device.sent == [1, 3]


async def test_a_frame_dropped_unread_stops_acks_past_what_came_before_it():
    device = Device(interval=0)
    device.acks.received(1)
    device.acks.frame_refused()  # seq 2, over the rate limit
    device.acks.received(3)
    await device.acks.frame_safe(3)
    await device.acks.frame_safe(1)
    assert device.sent == [1]
    device.acks.received(2)  # even a resend of it: the socket never knew which seq it had
    await device.acks.frame_safe(2)
    assert device.sent == [1]


async def test_a_frame_dropped_before_any_was_taken_stops_every_ack():
    device = Device(interval=0)
    device.acks.frame_refused()
    device.acks.received(5)
    await device.acks.frame_safe(5)
    assert device.sent == []


async def test_a_seq_taken_twice_is_acknowledged_once_either_copy_is_safe():
    device = Device(interval=0)
    device.acks.received(5)
    device.acks.received(5)  # a resend while the original waits: the relay keeps one frame
    await device.acks.frame_safe(5)
    assert device.sent == [5]
    await device.acks.frame_safe(5)  # the resend, stored in a later batch: answered too
    assert device.sent == [5, 5]


async def test_a_lower_seq_after_an_ack_holds_back_later_acks_until_safe():
    device = Device(interval=0)
    device.acks.received(10)
    await device.acks.frame_safe(10)
    device.acks.received(5)  # a device that broke the order: 5 after 10
    device.acks.received(11)
    await device.acks.frame_safe(11)
    assert device.sent == [10]
    await device.acks.frame_safe(5)
    assert device.sent == [10, 11]


async def test_a_resend_of_an_acknowledged_frame_gets_the_ack_again():
    device = Device(interval=0)
    device.acks.received(3)
    await device.acks.frame_safe(3)
    device.acks.received(3)  # its device did not wait for the ack, or lost it
    await device.acks.frame_safe(3)
    assert device.sent == [3, 3]
    await device.acks.flush()
    assert device.sent == [3, 3]  # once per resend


async def test_flush_sends_what_is_safe_before_the_interval_is_up():
    device = Device(interval=1.0)
    for seq in (1, 2):
        device.acks.received(seq)
    await device.acks.frame_safe(1)
    await device.acks.frame_safe(2)
    await device.acks.flush()  # the socket closes (a drain's 4012)
    assert device.sent == [1, 2]
    await device.advance(2)
    assert device.sent == [1, 2]  # the ack due later went with the flush


async def test_close_forgets_the_ack_due_later_and_frames_made_safe_after_it():
    device = Device(interval=1.0)
    for seq in (1, 2, 3):
        device.acks.received(seq)
    await device.acks.frame_safe(1)
    await device.acks.frame_safe(2)
    device.acks.close()
    await device.acks.frame_safe(3)  # the relay hands on what a closed socket sent
    assert device.due.sockets == {}
    await device.advance(2)
    await device.acks.flush()
    assert device.sent == [1]


async def test_past_max_waiting_acks_stop_below_the_oldest_waiting_frame(monkeypatch):
    monkeypatch.setattr(acks_module, "MAX_WAITING", 3)
    device = Device(interval=0)
    for seq in (1, 2, 3, 4, 5):  # 1 and 2 are never safe (refused unseen, the history full)
        device.acks.received(seq)
    for seq in (3, 4, 5):
        await device.acks.frame_safe(seq)
    assert device.sent == []
    assert len(device.acks.waiting) <= 3
    await device.acks.frame_safe(2)
    await device.acks.frame_safe(1)
    assert device.sent == []  # what waited was forgotten: the acks stay stopped below it


async def test_past_max_safe_an_ack_is_lower_never_earlier(monkeypatch):
    monkeypatch.setattr(acks_module, "MAX_SAFE", 4)
    device = Device(interval=0)
    for seq in range(1, 11):
        device.acks.received(seq)
    for seq in range(2, 11):  # 1 holds them all back
        await device.acks.frame_safe(seq)
    assert device.sent == []
    await device.acks.frame_safe(1)
    assert device.sent and all(seq <= 10 for seq in device.sent)


# One step of a socket's life: the device sends its next frame, or resends one it sent before
# (the index of one), a frame is dropped unread, a frame taken becomes safe (the index of one
# waiting), or time passes.
steps = st.lists(
    st.one_of(
        st.just(("send", 0)),
        st.tuples(st.just("resend"), st.integers(0, 20)),
        st.just(("drop", 0)),
        st.tuples(st.just("safe"), st.integers(0, 20)),
        st.tuples(st.just("wait"), st.sampled_from([0.1, 0.5, 1.0])),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=steps, interval=st.sampled_from([0.0, 0.5, 1.0]))
def test_an_ack_never_covers_a_frame_that_is_not_safe(steps, interval):
    """For a device whose new frames' seqs go up (docs/protocol.md), whatever it resends and
    whatever is dropped or late: when an ack of N goes out, every seq up to N it sent on the
    socket is safe. Acks only go up, one per interval at most."""

    async def run():
        device = Device(interval=interval)
        sent: list[int] = []  # seqs the device sent, dropped ones included
        taken: list[int] = []  # frames the socket took that are not safe yet
        safe: set[int] = set()
        times: list[float] = []

        async def check_send(seq):
            unsafe = {s for s in sent if s <= seq} - safe
            assert not unsafe, f"ack {seq} covers {unsafe}, not safe: sent {sent}, safe {safe}"
            assert not device.sent or seq >= device.sent[-1]
            times.append(device.clock.time())
            device.sent.append(seq)

        device.acks.send = check_send
        for kind, value in steps:
            if kind == "send":
                sent.append(len(sent))
                taken.append(sent[-1])
                device.acks.received(sent[-1])
            elif kind == "resend" and sent:
                seq = sent[value % len(sent)]
                taken.append(seq)
                device.acks.received(seq)
            elif kind == "drop":
                sent.append(len(sent))
                device.acks.frame_refused()
            elif kind == "safe" and taken:
                seq = taken.pop(value % len(taken))
                safe.add(seq)
                await device.acks.frame_safe(seq)
            elif kind == "wait":
                await device.advance(value)
            await settle(3)
        for earlier, later in zip(times, times[1:], strict=False):
            assert later - earlier >= interval - 1e-9
        device.acks.close()

    asyncio.run(run())
