"""Simulated worker devices for the demo and the load tests.

Each device walks the street grid of one city area (Barcelona's Eixample, whose blocks form a
regular grid turned 45 degrees), turning at random corners, and reports over the real worker
socket, the way a phone app would: Bearer token in the handshake, one position frame per tick,
reconnecting with backoff and jitter when the server goes away.
"""

import asyncio
import json
import logging
import math
import random
import time

import websockets

logger = logging.getLogger(__name__)

CENTRE = (41.3925, 2.1640)  # Eixample, Barcelona
BLOCK_METRES = 133.0  # one block plus one street
GRID_TURN = math.radians(45)
GRID_BLOCKS = 12  # the walkable area is GRID_BLOCKS blocks across
METRES_PER_DEGREE = 111_320.0


class StreetWalker:
    """A courier moving along a square street grid at a plausible, slightly varying speed."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        half = GRID_BLOCKS // 2
        self.x = rng.randint(-half, half) * BLOCK_METRES
        self.y = rng.uniform(-half, half) * BLOCK_METRES
        self.direction = rng.choice([(0, 1), (0, -1)])  # starts on an avenue
        self.base_speed = rng.uniform(3.0, 11.0)  # walking to riding, m/s
        self.speed = self.base_speed

    def step(self, seconds: float) -> None:
        """Move along the current street; at a crossing maybe turn, never leave the grid."""
        self.speed = max(0.5, self.base_speed * self.rng.uniform(0.7, 1.3))
        remaining = self.speed * seconds
        while remaining > 0:
            dx, dy = self.direction
            along = self.x if dx else self.y
            to_corner = BLOCK_METRES - (along * (dx or dy)) % BLOCK_METRES
            move = min(remaining, to_corner)
            self.x += dx * move
            self.y += dy * move
            remaining -= move
            if move == to_corner:
                # Snap to the crossing so that rounding never makes a second, tiny block.
                self.x = round(self.x / BLOCK_METRES) * BLOCK_METRES if dx else self.x
                self.y = round(self.y / BLOCK_METRES) * BLOCK_METRES if dy else self.y
                self._choose_street()

    def _choose_street(self) -> None:
        limit = GRID_BLOCKS / 2 * BLOCK_METRES
        choices = [(1, 0), (-1, 0), (0, 1), (0, -1)]
        reverse = (-self.direction[0], -self.direction[1])
        choices.remove(reverse)
        # Mostly keep going straight, as couriers do.
        weights = [4 if choice == self.direction else 1 for choice in choices]
        for _ in range(8):
            dx, dy = self.rng.choices(choices, weights)[0]
            if (
                abs(self.x + dx * BLOCK_METRES) <= limit
                and abs(self.y + dy * BLOCK_METRES) <= limit
            ):
                self.direction = (dx, dy)
                return
        self.direction = reverse

    def position(self) -> dict:
        """Return the current position as a worker position frame."""
        east = self.x * math.cos(GRID_TURN) - self.y * math.sin(GRID_TURN)
        north = self.x * math.sin(GRID_TURN) + self.y * math.cos(GRID_TURN)
        lat = CENTRE[0] + north / METRES_PER_DEGREE
        lng = CENTRE[1] + east / (METRES_PER_DEGREE * math.cos(math.radians(CENTRE[0])))
        dx, dy = self.direction
        compass = math.degrees(math.atan2(dx, dy) - GRID_TURN) % 360
        return {
            "lat": round(lat, 6),
            "lng": round(lng, 6),
            "ts": round(time.time(), 3),
            "acc": round(self.rng.uniform(3, 12), 1),
            "speed": round(self.speed, 2),
            "heading": round(compass, 1),
        }


async def run_device(url: str, token: str, *, interval: float, seed: int) -> None:
    """Report positions over the worker socket until cancelled, reconnecting when dropped."""
    rng = random.Random(seed)
    walker = StreetWalker(rng)
    delay = 0.5
    while True:
        try:
            async with websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {token}"}
            ) as socket:
                delay = 0.5
                while True:
                    walker.step(interval)
                    await socket.send(json.dumps(walker.position()))
                    await asyncio.sleep(interval * rng.uniform(0.9, 1.1))
        except (OSError, websockets.WebSocketException) as error:
            logger.info("Simulated device reconnecting after: %s", error)
        # Full jitter keeps a fleet from reconnecting in lockstep.
        await asyncio.sleep(rng.uniform(0, delay))
        delay = min(delay * 2, 30.0)


async def run_fleet(url: str, tokens: list[str], *, interval: float = 1.0) -> None:
    """Run one simulated device per token until cancelled."""
    await asyncio.gather(
        *(
            run_device(url, token, interval=interval, seed=index)
            for index, token in enumerate(tokens)
        )
    )
