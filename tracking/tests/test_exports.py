"""Exports (tracking/exports.py): each kind parses back to exactly the team's positions in the
range, streamed through an async iterator, named after the team and the range."""

import csv
import io
import json
from datetime import UTC, datetime

import gpxpy
import pytest
from asgiref.sync import async_to_sync

from teams.models import Worker
from tracking import exports
from tracking.history import Query
from tracking.models import StoredPosition

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp()


def store(worker, ts, lat, lng, team=None, **optional):
    StoredPosition.objects.create(
        team=team or worker.team, worker=worker, ts=ts, lat=lat, lng=lng, **optional
    )


@pytest.fixture
def stored(world):
    """Alice's three positions and Arno's one in range, one of Alice's out of it, and Bea's
    (team bravo) in it; Alice is called `Alice "A" <&>` to test escaping."""
    Worker.objects.filter(id=world.a1.id).update(name='Alice "A" <&>, 1')
    store(world.a1, T0 + 20, 41.2, 2.2, alt=12.5)
    store(world.a1, T0, 41.0, 2.0, acc=5.0, speed=1.5, heading=90.0, alt=10.0, batt=80.0)
    store(world.a1, T0 + 10.25, 41.1, 2.1)
    store(world.a2, T0 + 5, 42.0, 3.0)
    store(world.a1, T0 + 3600, 43.0, 4.0)  # past until
    store(world.b1, T0 + 5, 50.0, 5.0)  # bravo's
    return Query(since=T0, until=T0 + 3600)


def download(kind, team, query) -> tuple[object, str, int]:
    """The response, its whole body, and how many pieces it came in."""
    response = exports.export_response(kind, team, query)
    assert response.is_async  # daphne streams it without a thread

    async def collect():
        return [piece async for piece in response.streaming_content]

    pieces = async_to_sync(collect)()
    return response, b"".join(pieces).decode(), len(pieces)


def test_gpx_has_a_named_track_per_worker_with_exactly_its_points(world, stored):
    response, body, _ = download("gpx", world.alpha, stored)
    assert response["Content-Type"] == "application/gpx+xml"
    assert response["Content-Disposition"] == (
        'attachment; filename="alpha-20261129T100000Z-20261129T110000Z.gpx"'
    )
    parsed = gpxpy.parse(body)
    assert parsed.version == "1.1" and parsed.creator == "TeamTrack"
    tracks = {track.name: track for track in parsed.tracks}
    assert list(tracks) == ['Alice "A" <&>, 1', "Arno"]
    alice = [
        (p.time.timestamp(), p.latitude, p.longitude, p.elevation)
        for segment in tracks['Alice "A" <&>, 1'].segments
        for p in segment.points
    ]
    assert alice == [
        (T0, 41.0, 2.0, 10.0),
        (T0 + 10.25, 41.1, 2.1, None),
        (T0 + 20, 41.2, 2.2, 12.5),
    ]
    (arno,) = tracks["Arno"].segments
    assert [(p.time.timestamp(), p.latitude) for p in arno.points] == [(T0 + 5, 42.0)]


def test_geojson_has_a_feature_per_worker_with_lng_lat_and_times(world, stored):
    response, body, _ = download("geojson", world.alpha, stored)
    assert response["Content-Type"] == "application/geo+json"
    assert response["Content-Disposition"].endswith('.geojson"')
    collection = json.loads(body)
    assert collection["type"] == "FeatureCollection"
    alice, arno = collection["features"]
    assert alice["geometry"] == {
        "type": "LineString",
        "coordinates": [[2.0, 41.0], [2.1, 41.1], [2.2, 41.2]],
    }
    assert alice["properties"] == {
        "id": world.a1.id,
        "name": 'Alice "A" <&>, 1',
        "times": ["2026-11-29T10:00:00Z", "2026-11-29T10:00:10.250000Z", "2026-11-29T10:00:20Z"],
    }
    # One position: a Point (a LineString needs two).
    assert arno["geometry"] == {"type": "Point", "coordinates": [3.0, 42.0]}
    assert arno["properties"] == {
        "id": world.a2.id,
        "name": "Arno",
        "times": ["2026-11-29T10:00:05Z"],
    }


def test_csv_is_a_header_then_a_row_per_position_in_time_order(world, stored):
    response, body, _ = download("csv", world.alpha, stored)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(body)))
    assert list(rows[0]) == [
        "id", "name", "lat", "lng", "ts", "time", "acc", "speed", "heading", "alt", "batt",
    ]  # fmt: skip
    assert [(int(r["id"]), float(r["ts"]), float(r["lat"])) for r in rows] == [
        (world.a1.id, T0, 41.0),
        (world.a2.id, T0 + 5, 42.0),
        (world.a1.id, T0 + 10.25, 41.1),
        (world.a1.id, T0 + 20, 41.2),
    ]
    first = rows[0]
    assert first["name"] == 'Alice "A" <&>, 1'
    assert first["time"] == "2026-11-29T10:00:00Z"
    assert [first[f] for f in ("acc", "speed", "heading", "alt", "batt")] == [
        "5.0", "1.5", "90.0", "10.0", "80.0",
    ]  # fmt: skip
    assert rows[1]["acc"] == rows[1]["batt"] == ""  # absent, not zero


@pytest.mark.parametrize("kind", ["gpx", "geojson", "csv"])
def test_another_teams_positions_never_appear(world, stored, kind):
    _, body, _ = download(kind, world.alpha, Query())
    assert "50.0" not in body and "Bea" not in body
    _, body, _ = download(kind, world.alpha, Query(worker_id=world.b1.id))
    assert "50.0" not in body
    _, body, _ = download(kind, world.bravo, Query())
    assert "50.0" in body and "41.0" not in body and "Alice" not in body


def test_one_workers_export_and_an_open_range_are_named_so(world, stored):
    response, body, _ = download("gpx", world.alpha, Query(worker_id=world.a2.id))
    name = f"alpha-worker-{world.a2.id}-start-now.gpx"
    assert response["Content-Disposition"] == f'attachment; filename="{name}"'
    assert [t.name for t in gpxpy.parse(body).tracks] == ["Arno"]


@pytest.mark.parametrize("kind", ["gpx", "geojson", "csv"])
def test_an_empty_range_is_a_valid_empty_file(world, kind):
    _, body, _ = download(kind, world.alpha, Query(since=T0, until=T0 + 1))
    if kind == "gpx":
        assert gpxpy.parse(body).tracks == []
    elif kind == "geojson":
        assert json.loads(body) == {"type": "FeatureCollection", "features": []}
    else:
        assert body.splitlines() == [",".join(exports.CSV_HEADER)]


def test_a_worker_moved_away_keeps_its_name_in_its_old_teams_export(world):
    store(world.a1, T0, 41.0, 2.0)
    Worker.objects.filter(id=world.a1.id).update(team=world.bravo)
    _, body, _ = download("gpx", world.alpha, Query())
    assert [t.name for t in gpxpy.parse(body).tracks] == ["Alice"]


@pytest.mark.parametrize("kind", ["gpx", "geojson", "csv"])
def test_a_large_export_streams_in_pieces_and_loses_nothing(world, kind, monkeypatch):
    # Small chunks: a worker's track crosses several of them, and one crosses two workers.
    monkeypatch.setattr(exports, "CHUNK_ROWS", 700)
    rows = [
        StoredPosition(team=world.alpha, worker=worker, ts=T0 + i, lat=41 + i / 1e5, lng=2.0)
        for worker in (world.a1, world.a2)
        for i in range(3_000)
    ]
    StoredPosition.objects.bulk_create(rows)
    _, body, pieces = download(kind, world.alpha, Query())
    assert pieces >= 2 + 9  # the beginning, a piece a chunk of rows (by worker: 10), the end
    if kind == "gpx":
        counts = [len(t.segments[0].points) for t in gpxpy.parse(body).tracks]
    elif kind == "geojson":
        counts = [len(f["geometry"]["coordinates"]) for f in json.loads(body)["features"]]
    else:
        counts = [len(list(csv.DictReader(io.StringIO(body))))]
    assert sum(counts) == 6_000
