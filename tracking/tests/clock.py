"""A clock that moves only when a test says so (tracking.clock.Clock)."""

import asyncio


class ManualClock:
    def __init__(self, start: float = 1_000_000.0):
        self.now = start
        self.sleepers: list[tuple[float, asyncio.Future]] = []

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep_until(self, moment: float) -> None:
        if moment <= self.now:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        self.sleepers.append((moment, future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time on by `seconds`, waking each sleeper at its moment, in order, and letting
        it run until it waits again."""
        target = self.now + seconds
        while due := sorted((s for s in self.sleepers if s[0] <= target), key=lambda s: s[0]):
            sleeper = due[0]
            self.sleepers.remove(sleeper)
            self.now = sleeper[0]
            sleeper[1].set_result(None)
            await settle()
        self.now = target
        await settle()


async def settle(rounds: int = 20) -> None:
    """Let every ready task run until it waits on something that is not ready."""
    for _ in range(rounds):
        await asyncio.sleep(0)
