"""The relay's real clock: sleep_until never returns before its moment, on uvloop too (which
keeps whole milliseconds and wakes early), so that a tick never lands in the window before."""

import asyncio
import random
import time

import pytest
import uvloop

from tracking.clock import WallClock


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_sleep_until_returns_once_the_moment_has_come(loop_factory):
    async def woke_early() -> list[float]:
        clock, early = WallClock(), []
        for _ in range(60):
            moment = time.time() + random.uniform(0.0005, 0.004)
            await clock.sleep_until(moment)
            if time.time() < moment:
                early.append(moment - time.time())
        return early

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        assert runner.run(woke_early()) == []
