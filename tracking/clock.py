"""The relay's clock, injected so that tests of windows, leases and timeouts control time."""

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds: window boundaries are multiples of the window on every replica."""

    def monotonic(self) -> float:
        """Seconds for durations (how long a manager socket has not read)."""

    async def sleep_until(self, moment: float) -> None:
        """Return once time() has reached `moment`."""


class WallClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(self, moment: float) -> None:
        await asyncio.sleep(max(0.0, moment - time.time()))
        if (left := moment - time.time()) > 0:
            # uvloop keeps whole milliseconds and wakes up to 1.5 ms early: a tick that woke
            # before its window's boundary would count as the window before it.
            await asyncio.sleep(left + 0.002)
