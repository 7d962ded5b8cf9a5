"""Reading the history (tracking.models.StoredPosition): a team's positions for a range, a
worker's track with its stops, and where everyone was at a moment. The pages
(tracking/history_views.py), the exports (tracking/exports.py) and the API (tracking/api/) all
read through here, so "a manager sees only their own teams" is decided by the caller passing
a Team it already checked, and nothing here takes a team from the request.

Times are Unix seconds (floats), as the live feed's `ts`.
"""

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time

from django.db.models import OuterRef, QuerySet, Subquery
from django.utils.dateparse import parse_date, parse_datetime

from teams.models import Team, Worker
from tracking.models import StoredPosition
from tracking.positions import FeedPosition

# The optional fields a position may carry, in the live feed's names.
OPTIONAL_FIELDS = ("acc", "speed", "heading", "alt", "batt")

EARTH_RADIUS_METRES = 6_371_008.8  # the mean radius (IUGG), as haversine distances use


@dataclass(frozen=True)
class Query:
    """What a history request asks for: one worker or the whole team, over [since, until)."""

    worker_id: int | None = None
    since: float | None = None
    until: float | None = None


def parse_query(params: Mapping[str, str]) -> Query:
    """Read `worker` (an id), `since` and `until` (ISO 8601 times with or without an offset;
    without one, UTC) from a request's query parameters. Raises ValueError with a short text
    a client can read (the caller answers 400 with it).

    A date alone (`2026-11-29`) is that day's midnight UTC, so `since=2026-11-29&until=2026-11-30`
    is the whole of the 29th: `until` is exclusive, as everywhere in the history."""
    worker = params.get("worker") or None
    worker_id = None
    if worker is not None:
        # int() takes " 7" and "7_0"; an id is digits and nothing else.
        if not worker.isascii() or not worker.isdigit():
            raise ValueError("worker must be a worker's id (a whole number)")
        worker_id = int(worker)
    since = _parse_time(params, "since")
    until = _parse_time(params, "until")
    if since is not None and until is not None and since >= until:
        raise ValueError("since must be before until")
    return Query(worker_id=worker_id, since=since, until=until)


def _parse_time(params: Mapping[str, str], name: str) -> float | None:
    """One ISO 8601 parameter as Unix seconds, or None when it is absent or empty."""
    text = (params.get(name) or "").strip()
    if not text:
        return None
    try:
        # A valid pattern with impossible numbers (month 13) raises ValueError itself.
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = datetime.combine(day, time(), tzinfo=UTC) if day else None
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(f"{name} must be an ISO 8601 time, such as 2026-11-29T10:00:00Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        # Year 1 at +05:00 or year 9999 at -05:00 is outside the years UTC can be written in,
        # which the exports' file names and times are.
        moment.astimezone(UTC)
    except OverflowError:
        raise ValueError(f"{name} must be between the years 1 and 9999 in UTC") from None
    return moment.timestamp()


def positions(team: Team, query: Query) -> QuerySet[StoredPosition]:
    """The team's stored positions matching `query`, ordered by ts then id."""
    return matching(team, query).order_by("ts", "id")


def matching(team: Team, query: Query) -> QuerySet[StoredPosition]:
    """The team's stored positions matching `query`, in no order (each reader orders them). With a worker, PostgreSQL
    reads the unique (worker, ts) index; without, the (team, ts) one."""
    rows = StoredPosition.objects.filter(team=team)
    if query.worker_id is not None:
        rows = rows.filter(worker_id=query.worker_id)
    if query.since is not None:
        rows = rows.filter(ts__gte=query.since)
    if query.until is not None:
        rows = rows.filter(ts__lt=query.until)
    return rows


def as_feed_position(row: StoredPosition) -> FeedPosition:
    """A stored position in the live feed's shape: id (the worker's), lat, lng, ts, and each
    optional field it has."""
    position: FeedPosition = {"id": row.worker_id, "lat": row.lat, "lng": row.lng, "ts": row.ts}
    for name in OPTIONAL_FIELDS:
        value = getattr(row, name)
        if value is not None:
            position[name] = value
    return position


@dataclass(frozen=True)
class Stop:
    """A place a worker stayed: no movement beyond STOP_RADIUS_METRES for at least the stop
    length asked for."""

    since: float
    until: float
    lat: float
    lng: float


def tracks(
    team: Team, query: Query, *, max_points: int | None = None
) -> dict[int, list[tuple[float, float, float]]]:
    """Each worker's points (ts, lat, lng) in time order, by worker id. Raises TooManyPoints
    past `max_points` (read no further than one more)."""
    # Tuples, not models: a worker-day at one position a second is 86,400 rows, and building a
    # model instance for each costs several times the query.
    rows = (
        matching(team, query)
        .order_by("worker_id", "ts")
        .values_list("worker_id", "ts", "lat", "lng")
    )
    read = rows.iterator(chunk_size=10_000)
    if max_points is not None:
        read = _at_most(read, max_points)
    return {
        worker_id: [(ts, lat, lng) for _, ts, lat, lng in points]
        for worker_id, points in itertools.groupby(read, key=_worker)
    }


class TooManyPoints(ValueError):
    """A range holds more points than a caller will hold in memory at once."""


def _at_most(rows, limit: int):
    for count, row in enumerate(rows, 1):
        if count > limit:
            raise TooManyPoints(
                f"more than {limit} positions in this range: pick a worker or a shorter range "
                "(or export it)"
            )
        yield row


def _worker(row: tuple) -> int:
    return row[0]


def stops(
    points: list[tuple[float, float, float]], *, minutes: float, radius_m: float
) -> list[Stop]:
    """The stops along one worker's points (ts, lat, lng in time order).

    A stop begins at a point and lasts while every following point stays within `radius_m` of
    it; it counts if its last point is at least `minutes` after its first. Anchoring on the
    first point (not a moving centroid) keeps a slow walk from becoming one long stop, and makes
    the stop's place the one where the worker arrived. A gap in the points (the device off)
    at one place counts as staying there."""
    found = []
    length = minutes * 60
    start = 0
    due = 0  # the first point at least `length` after points[start]: a stop must reach it
    while start < len(points):
        ts, lat, lng = points[start]
        due = max(due, start + 1)
        while due < len(points) and points[due][0] - ts < length:
            due += 1
        if due == len(points):
            break  # no point is `length` after this one: no stop can begin here or later
        # One distance tells most starting points apart: a worker on the move is far from
        # here by then. Only a candidate is walked point by point, so a day of movement costs
        # a few distances a point, not one for each point within the radius.
        if distance_m(lat, lng, *points[due][1:]) > radius_m:
            start += 1
            continue
        end = start + 1
        while end < len(points) and distance_m(lat, lng, *points[end][1:]) <= radius_m:
            end += 1
        last_ts = points[end - 1][0]
        if last_ts - ts >= length:
            found.append(Stop(since=ts, until=last_ts, lat=lat, lng=lng))
            start = end  # the point that left the radius may begin the next stop
        else:
            start += 1
    return found


def distance_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """The great-circle distance in metres (haversine: exact enough at a stop's scale)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lng2 - lng1) / 2
    a = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    return 2 * EARTH_RADIUS_METRES * math.asin(min(1.0, math.sqrt(a)))


def moment(team: Team, at: float, *, lookback: float = 3600.0) -> list[FeedPosition]:
    """Each of the team's workers' last position at or before `at` (within `lookback` seconds
    before it; a worker with none is left out).

    A worker's last position is taken whatever team it was stored under, and kept only if that
    is this team: a worker who had moved to another team by then was not in this one at `at`,
    and one who moved here later was not here yet. Workers are probed one by one on the unique
    (worker, ts) index (a backward scan that stops at the first row), so the cost grows with
    the number of workers, not with how many positions they sent in the lookback.

    Two queries: the probe over the team's workers now; and the workers no longer in the team
    who have positions under it in the lookback window (read on the (team, ts) index and
    joined to their workers: those moved away since), probed the same way if there are any."""
    window = StoredPosition.objects.filter(ts__lte=at, ts__gte=at - lookback)
    moved = window.filter(team=team).exclude(worker__team=team).values_list("worker_id", flat=True)
    found = _last_positions(team, window, Worker.objects.filter(team=team))
    moved_ids = set(moved.distinct())
    if moved_ids:
        found += _last_positions(team, window, Worker.objects.filter(id__in=moved_ids))
    found.sort(key=lambda position: position["id"])
    return found


def _last_positions(team: Team, window, workers: QuerySet[Worker]) -> list[FeedPosition]:
    """The last position in `window` of each of `workers`, if stored under `team`."""
    last = window.filter(worker_id=OuterRef("pk")).order_by("-ts").values("pk")[:1]
    # A worker with none gives NULL, which IN never matches (excluding it would run the
    # subquery twice).
    ids = workers.annotate(last=Subquery(last)).values("last")
    rows = StoredPosition.objects.filter(pk__in=ids, team=team)
    # Tuples, not models: building a thousand instances costs as much as the query.
    return [_feed(row) for row in rows.values_list(*FEED_FIELDS)]


FEED_FIELDS = ("worker_id", "lat", "lng", "ts", *OPTIONAL_FIELDS)


def _feed(row: tuple) -> FeedPosition:
    """as_feed_position() of a values_list(*FEED_FIELDS) row."""
    worker_id, lat, lng, ts, *optional = row
    position: FeedPosition = {"id": worker_id, "lat": lat, "lng": lng, "ts": ts}
    for name, value in zip(OPTIONAL_FIELDS, optional, strict=True):
        if value is not None:
            position[name] = value
    return position
