"""Reading the history (tracking/history.py): the query parameters, a team's positions and
tracks, stops along a track, and where everyone was at a moment."""

import random
import time
from datetime import UTC, datetime

import pytest

from teams.models import Worker
from tracking import history
from tracking.history import Query, Stop
from tracking.models import StoredPosition

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp()
METRE = 1 / 111_195  # degrees of latitude in a metre, near enough


def store(worker, ts, lat=41.0, lng=2.0, team=None, **optional):
    return StoredPosition.objects.create(
        team=team or worker.team, worker=worker, ts=ts, lat=lat, lng=lng, **optional
    )


# ---------------------------------------------------------------- parse_query


def test_a_query_reads_worker_and_times_with_or_without_an_offset():
    query = history.parse_query(
        {"worker": "12", "since": "2026-11-29T10:00:00Z", "until": "2026-11-29T12:30:00+02:00"}
    )
    assert query == Query(worker_id=12, since=T0, until=T0 + 30 * 60)
    assert history.parse_query({"since": "2026-11-29T10:00:00"}).since == T0  # naive is UTC
    assert history.parse_query({"since": "2026-11-29T10:00:00.5Z"}).since == T0 + 0.5


def test_a_date_alone_is_its_midnight_utc_and_until_is_exclusive():
    query = history.parse_query({"since": "2026-11-29", "until": "2026-11-30"})
    assert query.since == T0 - 10 * 3600
    assert query.until - query.since == 86_400


def test_absent_or_empty_parameters_ask_for_everything():
    assert history.parse_query({}) == Query()
    assert history.parse_query({"worker": "", "since": "", "until": " "}) == Query()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"worker": "abc"}, "worker"),
        ({"worker": "-3"}, "worker"),
        ({"worker": "1.5"}, "worker"),
        ({"worker": "٣"}, "worker"),  # a digit to str.isdigit, not an id
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-13-01T00:00:00Z"}, "since"),
        ({"until": "2026-11-29T25:00"}, "until"),
        ({"until": "1732870000"}, "until"),
        ({"since": "2026-11-29T10:00Z", "until": "2026-11-29T10:00Z"}, "before"),
        ({"since": "2026-11-30", "until": "2026-11-29"}, "before"),
    ],
)
def test_bad_parameters_raise_a_short_value_error(params, message):
    with pytest.raises(ValueError, match=message) as raised:
        history.parse_query(params)
    assert len(str(raised.value)) < 80 and "\n" not in str(raised.value)


# ---------------------------------------------------------------- positions, as_feed_position


def test_positions_are_the_teams_in_the_range_in_time_order(world):
    store(world.a2, T0 + 5)
    store(world.a1, T0 + 5)
    store(world.a1, T0)
    store(world.a1, T0 + 10)  # until is exclusive
    store(world.a1, T0 - 1)  # before since
    store(world.b1, T0 + 1)  # another team's
    rows = history.positions(world.alpha, Query(since=T0, until=T0 + 10))
    assert [(row.worker_id, row.ts) for row in rows] == [
        (world.a1.id, T0),
        (world.a2.id, T0 + 5),  # the same ts: by id, the order they were stored in
        (world.a1.id, T0 + 5),
    ]
    only_a1 = history.positions(world.alpha, Query(worker_id=world.a1.id))
    assert [row.ts for row in only_a1] == [T0 - 1, T0, T0 + 5, T0 + 10]
    assert not history.positions(world.alpha, Query(worker_id=world.b1.id)).exists()


def test_a_worker_moved_to_another_team_leaves_its_old_positions_with_the_old_team(world):
    store(world.a1, T0)
    Worker.objects.filter(id=world.a1.id).update(team=world.bravo)
    store(world.a1, T0 + 60, team=world.bravo)
    assert [row.ts for row in history.positions(world.alpha, Query())] == [T0]
    assert [row.ts for row in history.positions(world.bravo, Query())] == [T0 + 60]


def test_a_feed_position_has_the_live_feeds_names_and_only_the_fields_it_has(world):
    row = store(world.a1, T0, lat=41.5, lng=2.25, acc=5.0, batt=80.0)
    assert history.as_feed_position(row) == {
        "id": world.a1.id,
        "lat": 41.5,
        "lng": 2.25,
        "ts": T0,
        "acc": 5.0,
        "batt": 80.0,
    }
    full = store(world.a1, T0 + 1, acc=1.0, speed=2.0, heading=3.0, alt=4.0, batt=5.0)
    assert set(history.as_feed_position(full)) == {
        "id",
        "lat",
        "lng",
        "ts",
        *history.OPTIONAL_FIELDS,
    }


# ---------------------------------------------------------------- tracks


def test_tracks_are_each_workers_points_in_time_order(world):
    store(world.a2, T0 + 2, lat=3.0, lng=4.0)
    store(world.a1, T0 + 1, lat=1.5, lng=2.5)
    store(world.a1, T0, lat=1.0, lng=2.0)
    store(world.b1, T0, lat=9.0, lng=9.0)
    assert history.tracks(world.alpha, Query()) == {
        world.a1.id: [(T0, 1.0, 2.0), (T0 + 1, 1.5, 2.5)],
        world.a2.id: [(T0 + 2, 3.0, 4.0)],
    }
    assert history.tracks(world.alpha, Query(worker_id=world.a2.id, until=T0 + 2)) == {}
    assert history.tracks(world.bravo, Query(worker_id=world.a1.id)) == {}


# ---------------------------------------------------------------- stops


def walk(start_ts, start_lat, metres_a_minute, minutes):
    """A point a minute, moving north at this pace."""
    return [
        (start_ts + 60 * i, start_lat + i * metres_a_minute * METRE, 2.0) for i in range(minutes)
    ]


def test_a_stay_within_the_radius_for_long_enough_is_a_stop():
    moving = walk(T0, 41.0, 200, 10)  # 200 m a minute for ten minutes
    staying = [(T0 + 600 + 60 * i, 41.02, 2.0 + (i % 2) * 20 * METRE) for i in range(8)]
    leaving = walk(T0 + 1080, 41.021, 200, 5)
    found = history.stops(moving + staying + leaving, minutes=5, radius_m=50)
    assert found == [Stop(since=T0 + 600, until=T0 + 600 + 7 * 60, lat=41.02, lng=2.0)]


def test_a_short_stay_or_a_slow_walk_is_no_stop():
    staying = [(T0 + 60 * i, 41.0, 2.0) for i in range(4)]  # three minutes
    assert history.stops(staying, minutes=5, radius_m=50) == []
    # 20 m a minute: every point within 50 m of the one before, never five minutes of one place
    assert history.stops(walk(T0, 41.0, 20, 60), minutes=5, radius_m=50) == []
    assert history.stops([], minutes=5, radius_m=50) == []
    assert history.stops([(T0, 41.0, 2.0)], minutes=0, radius_m=50) == []


def test_a_gap_at_one_place_is_a_stop_and_two_stays_are_two_stops():
    points = [(T0, 41.0, 2.0), (T0 + 3600, 41.0, 2.0)]  # the device off for an hour, not moved
    points += walk(T0 + 3660, 41.01, 300, 3)
    points += [(T0 + 4000 + 60 * i, 41.05, 2.0) for i in range(6)]
    found = history.stops(points, minutes=5, radius_m=50)
    assert found == [
        Stop(since=T0, until=T0 + 3600, lat=41.0, lng=2.0),
        Stop(since=T0 + 4000, until=T0 + 4300, lat=41.05, lng=2.0),
    ]


def test_distance_is_haversine():
    assert history.distance_m(41.0, 2.0, 41.0, 2.0) == 0
    # one degree of latitude: 111.195 km on the mean radius
    assert history.distance_m(0.0, 0.0, 1.0, 0.0) == pytest.approx(111_195, rel=1e-4)
    assert history.distance_m(0.0, 179.9, 0.0, -179.9) == pytest.approx(22_239, rel=1e-3)


# ---------------------------------------------------------------- moment


def test_the_moment_is_each_workers_last_position_at_or_before_it(world):
    store(world.a1, T0 - 120, lat=1.0)
    store(world.a1, T0, lat=2.0, acc=3.0)  # at the moment itself: it counts
    store(world.a1, T0 + 1, lat=3.0)  # after
    store(world.a2, T0 - 3000, lat=4.0)
    store(world.b1, T0 - 1, lat=5.0)  # another team's worker
    found = history.moment(world.alpha, T0)
    assert found == [
        {"id": world.a1.id, "lat": 2.0, "lng": 2.0, "ts": T0, "acc": 3.0},
        {"id": world.a2.id, "lat": 4.0, "lng": 2.0, "ts": T0 - 3000},
    ]
    # out of the lookback: left out
    assert [p["id"] for p in history.moment(world.alpha, T0, lookback=600)] == [world.a1.id]
    assert history.moment(world.alpha, T0 - 3601) == []


def test_the_moment_follows_the_team_a_worker_was_in_then(world):
    store(world.a1, T0 - 600, lat=1.0)  # in alpha
    Worker.objects.filter(id=world.a1.id).update(team=world.bravo)
    store(world.a1, T0 + 600, lat=2.0, team=world.bravo)  # later, in bravo
    # Alpha at T0 still shows the worker (it has moved since); bravo at T0 does not.
    assert [(p["id"], p["lat"]) for p in history.moment(world.alpha, T0)] == [(world.a1.id, 1.0)]
    assert history.moment(world.bravo, T0) == []
    assert [(p["id"], p["lat"]) for p in history.moment(world.bravo, T0 + 600)] == [
        (world.a1.id, 2.0)
    ]
    # Once its last position before the moment is bravo's, alpha's moment leaves it out.
    assert history.moment(world.alpha, T0 + 600) == []


def test_the_moment_is_at_most_three_queries(world, django_assert_max_num_queries):
    for i in range(30):
        store(world.a1, T0 - i * 10)
        store(world.a2, T0 - i * 10 - 5)
    with django_assert_max_num_queries(3):
        assert len(history.moment(world.alpha, T0)) == 2


def stops_by_brute_force(points, minutes, radius_m):
    """The definition, walked point by point from every start: what stops() must find."""
    found, start = [], 0
    while start < len(points):
        ts, lat, lng = points[start]
        end = start + 1
        while end < len(points) and history.distance_m(lat, lng, *points[end][1:]) <= radius_m:
            end += 1
        if points[end - 1][0] - ts >= minutes * 60 and end - 1 > start:
            found.append(Stop(since=ts, until=points[end - 1][0], lat=lat, lng=lng))
            start = end
        else:
            start += 1
    return found


@pytest.mark.parametrize("seed", range(20))
def test_stops_are_what_the_definition_finds_on_random_tracks(seed):
    pick = random.Random(seed)
    points, ts, lat, found = [], T0, 41.0, 0
    for _ in range(400):
        ts += pick.choice([1, 5, 30, 60, 600])
        lat += pick.choice([0, 0, 0, 5, 20, 80]) * METRE * pick.choice([-1, 1])
        points.append((ts, lat, 2.0))
    for minutes, radius in [(5, 50), (2, 20), (10, 100)]:
        expected = stops_by_brute_force(points, minutes, radius)
        assert history.stops(points, minutes=minutes, radius_m=radius) == expected
        found += len(expected)
    assert found > 0  # the tracks have stops to find


def test_stops_along_a_worker_day_at_one_position_a_second_take_well_under_a_second():
    # A slow walk (0.4 m/s): every point has the next 125 within 50 m, none five minutes of one.
    points = [(T0 + i, 41.0 + i * 0.4 * METRE, 2.0) for i in range(86_400)]
    started = time.process_time()
    assert history.stops(points, minutes=5, radius_m=50) == []
    assert time.process_time() - started < 1.0
