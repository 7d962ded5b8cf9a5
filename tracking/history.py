"""Reading the history (tracking.models.StoredPosition): a team's positions for a range, a
worker's track with its stops, and where everyone was at a moment. The pages
(tracking/history_views.py), the exports (tracking/exports.py) and the API (tracking/api/) all
read through here, so "a manager sees only their own teams" is decided by the caller passing
a Team it already checked, and nothing here takes a team from the request.

Times are Unix seconds (floats), as the live feed's `ts`.
"""

from collections.abc import Mapping
from dataclasses import dataclass

from django.db.models import QuerySet

from teams.models import Team
from tracking.models import StoredPosition
from tracking.positions import FeedPosition

# The optional fields a position may carry, in the live feed's names.
OPTIONAL_FIELDS = ("acc", "speed", "heading", "alt", "batt")


@dataclass(frozen=True)
class Query:
    """What a history request asks for: one worker or the whole team, over [since, until)."""

    worker_id: int | None = None
    since: float | None = None
    until: float | None = None


def parse_query(params: Mapping[str, str]) -> Query:
    """Read `worker` (an id), `since` and `until` (ISO 8601 times with or without an offset;
    without one, UTC) from a request's query parameters. Raises ValueError with a short text
    a client can read (the caller answers 400 with it)."""
    raise NotImplementedError


def positions(team: Team, query: Query) -> QuerySet[StoredPosition]:
    """The team's stored positions matching `query`, ordered by ts then id."""
    raise NotImplementedError


def as_feed_position(row: StoredPosition) -> FeedPosition:
    """A stored position in the live feed's shape: id (the worker's), lat, lng, ts, and each
    optional field it has."""
    raise NotImplementedError


@dataclass(frozen=True)
class Stop:
    """A place a worker stayed: no movement beyond STOP_RADIUS_METRES for at least the stop
    length asked for."""

    since: float
    until: float
    lat: float
    lng: float


def tracks(team: Team, query: Query) -> dict[int, list[tuple[float, float, float]]]:
    """Each worker's points (ts, lat, lng) in time order, by worker id."""
    raise NotImplementedError


def stops(
    points: list[tuple[float, float, float]], *, minutes: float, radius_m: float
) -> list[Stop]:
    """The stops along one worker's points (ts, lat, lng in time order)."""
    raise NotImplementedError


def moment(team: Team, at: float, *, lookback: float = 3600.0) -> list[FeedPosition]:
    """Each of the team's workers' last position at or before `at` (within `lookback` seconds
    before it; a worker with none is left out)."""
    raise NotImplementedError
