"""Positions as they cross modules, and the one rule of which of two positions is newer."""

from typing import NotRequired, TypedDict


class Position(TypedDict):
    """A device's position, as tracking.protocol validated it."""

    lat: float
    lng: float
    ts: float  # Unix seconds, from the device's clock
    acc: NotRequired[float]
    speed: NotRequired[float]
    heading: NotRequired[float]
    alt: NotRequired[float]  # metres above sea level
    batt: NotRequired[float]  # the device's battery, percent
    seq: NotRequired[int]  # the device's own number for it, if it wants acks


class FeedPosition(TypedDict):
    """A position as managers see it: tagged with its worker's id, without the device's seq."""

    id: int
    lat: float
    lng: float
    ts: float
    acc: NotRequired[float]
    speed: NotRequired[float]
    heading: NotRequired[float]
    alt: NotRequired[float]
    batt: NotRequired[float]


# One team's newest positions: worker id -> position.
TeamPositions = dict[int, Position]
# Every team's: team id -> worker id -> position.
Batches = dict[int, TeamPositions]


def is_newer(candidate: Position | FeedPosition, known: Position | FeedPosition | None) -> bool:
    """Whether `candidate` replaces `known` as a worker's newest position.

    The later `ts` wins. On a tie the known one stays: a resend, or a second report of the same
    instant, changes nothing, wherever it is decided (the device's replica, the managers'
    replicas, a slow map's held frame, and the Lua script of tracking.state, which applies
    this same rule inside Redis).
    """
    return known is None or candidate["ts"] > known["ts"]


def merge_newest(into: Batches, batches: Batches) -> None:
    """Merge `batches` into `into`, keeping each worker's newest position."""
    for team_id, positions in batches.items():
        known_positions = into.setdefault(team_id, {})
        for worker_id, position in positions.items():
            if is_newer(position, known_positions.get(worker_id)):
                known_positions[worker_id] = position
