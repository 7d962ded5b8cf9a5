"""The history page and what it reads (tracking/history_views.py): only a team's managers (or
superusers) reach any of it, as with the live map; bad parameters are a 400 with a short text;
the JSON is compact and shaped as static/js/history/ reads it."""

import csv
import io
import json
import warnings
from datetime import UTC, datetime

import pytest

from tracking.models import StoredPosition

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 18, 8, tzinfo=UTC).timestamp()
RANGE = {"since": "2026-11-18T00:00:00Z", "until": "2026-11-19T00:00:00Z"}


def history_urls(slug: str) -> list[str]:
    base = f"/teams/{slug}/history/"
    query = "since=2026-11-18T00:00:00Z&until=2026-11-19T00:00:00Z"
    return [
        base,
        f"{base}tracks.json?{query}",
        f"{base}moment.json?at=2026-11-18T09:00:00Z",
        *(f"{base}export.{kind}?{query}" for kind in ("gpx", "geojson", "csv")),
    ]


def store(worker, points):
    StoredPosition.objects.bulk_create(
        StoredPosition(team=worker.team, worker=worker, ts=ts, lat=lat, lng=lng)
        for ts, lat, lng in points
    )


@pytest.fixture
def stored(world):
    """Alice walks east for 10 minutes, then stands still 10 minutes; Arno stands still; Bea
    (the other team) walks too."""
    walk = [(T0 + 60 * n, 41.38, 2.15 + 0.001 * n) for n in range(10)]
    stay = [(T0 + 60 * n, 41.38, 2.159) for n in range(10, 21)]
    store(world.a1, walk + stay)
    store(world.a2, [(T0 + 0.1234 + 60 * n, 41.4012345678, 2.1698765432) for n in range(3)])
    store(world.b1, [(T0 + 60 * n, 40.0, 3.0 + 0.001 * n) for n in range(5)])
    return world


def body_of(response) -> bytes:
    """A response's body, streamed or not (the exports stream through an async iterator)."""
    if not response.streaming:
        return response.content
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "must consume asynchronous iterators": tests may
        return b"".join(response)


# ---------------------------------------------------------------- who may see it


def test_every_history_url_needs_a_login(client, world):
    for url in history_urls("alpha"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next=/teams/alpha/history/")


def test_a_manager_of_another_team_reaches_none_of_it(client, stored):
    """As on the map: 403 for a team that is not theirs (404 for no team at all)."""
    client.force_login(stored.bob)
    for url in history_urls("alpha"):
        response = client.get(url)
        assert response.status_code == 403, url
        assert b"Alice" not in body_of(response) and b"41.38" not in body_of(response), url
    for url in history_urls("nope"):
        assert client.get(url).status_code == 404, url


def test_their_own_team_and_a_superuser_get_it(client, stored):
    for user in (stored.ann, stored.root):
        client.force_login(user)
        for url in history_urls("alpha"):
            assert client.get(url).status_code == 200, (user, url)


def test_another_teams_worker_is_refused_by_id(client, stored):
    client.force_login(stored.ann)
    base = "/teams/alpha/history/"
    query = f"worker={stored.b1.id}&since={RANGE['since']}&until={RANGE['until']}"
    for url in (f"{base}tracks.json?{query}", f"{base}export.csv?{query}"):
        response = client.get(url)
        assert response.status_code == 400, url
        assert response.content == b"worker: no such worker in this team"


# ---------------------------------------------------------------- the page


def test_the_page_carries_its_config_and_the_workers(client, stored, settings):
    settings.TEAMTRACK_STOP_MINUTES = 7.5
    client.force_login(stored.ann)
    page = client.get("/teams/alpha/history/").content.decode()
    raw = page.split('id="history-config" type="application/json">')[1].split("<")[0]
    config = json.loads(raw)
    assert config["team"] == "alpha"
    assert config["tracksUrl"] == "/teams/alpha/history/tracks.json"
    assert config["momentUrl"] == "/teams/alpha/history/moment.json"
    assert config["exportUrl"] == "/teams/alpha/history/export."
    assert config["stopMinutes"] == 7.5
    assert f'<option value="{stored.a1.id}">Alice</option>' in page
    assert "Bea" not in page
    assert "/static/js/history/history.js" in page and "/static/vendor/leaflet/leaflet.js" in page
    # No inline script or style: the policy refuses them.
    assert "<script>" not in page and "style=" not in page


def test_the_map_and_the_history_link_to_each_other(client, world):
    client.force_login(world.ann)
    assert 'href="/teams/alpha/history/"' in client.get("/teams/alpha/").content.decode()
    assert 'href="/teams/alpha/"' in client.get("/teams/alpha/history/").content.decode()


# ---------------------------------------------------------------- tracks.json


def test_tracks_are_compact_arrays_with_names_and_stops(client, stored):
    client.force_login(stored.ann)
    response = client.get("/teams/alpha/history/tracks.json", {**RANGE, "stop_minutes": "5"})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert b" " not in response.content.replace(b"Alice", b"").replace(b"Arno", b"")
    body = json.loads(response.content)
    a1, a2 = str(stored.a1.id), str(stored.a2.id)
    assert body["workers"] == {a1: "Alice", a2: "Arno"}
    assert set(body["tracks"]) == {a1, a2}
    assert len(body["tracks"][a1]) == 21
    assert body["tracks"][a1][0] == [T0, 41.38, 2.15]
    # Rounded: ts to the millisecond, coordinates to 6 decimals.
    assert body["tracks"][a2][0] == [round(T0 + 0.1234, 3), 41.401235, 2.169877]
    # Alice's 10 minutes standing still are a stop; Arno's 2 minutes are not.
    assert body["stops"] == {
        a1: [{"since": T0 + 540, "until": T0 + 1200, "lat": 41.38, "lng": 2.159}],
        a2: [],
    }


def test_tracks_of_one_worker_and_a_longer_stop_length(client, stored):
    client.force_login(stored.ann)
    query = {**RANGE, "worker": str(stored.a1.id), "stop_minutes": "15"}
    body = json.loads(client.get("/teams/alpha/history/tracks.json", query).content)
    assert list(body["tracks"]) == [str(stored.a1.id)]
    assert body["stops"] == {str(stored.a1.id): []}


def test_tracks_stop_length_defaults_to_the_setting(client, stored, settings):
    settings.TEAMTRACK_STOP_MINUTES = 12.0
    client.force_login(stored.ann)
    body = json.loads(client.get("/teams/alpha/history/tracks.json", RANGE).content)
    assert body["stops"][str(stored.a1.id)] == []


def test_tracks_with_an_offset_and_an_empty_range(client, stored):
    client.force_login(stored.ann)
    query = {"since": "2026-11-18T09:00:00+01:00", "until": "2026-11-18T09:01:30+01:00"}
    body = json.loads(client.get("/teams/alpha/history/tracks.json", query).content)
    assert [point[0] for point in body["tracks"][str(stored.a1.id)]] == [T0, T0 + 60]
    query = {"since": "2025-01-01T00:00:00Z", "until": "2025-01-02T00:00:00Z"}
    body = json.loads(client.get("/teams/alpha/history/tracks.json", query).content)
    assert body == {"workers": {}, "tracks": {}, "stops": {}}


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"since": RANGE["since"]},
        {"until": RANGE["until"]},
        {**RANGE, "since": "yesterday"},
        {**RANGE, "until": "2026-13-45T00:00:00Z"},
        {"since": RANGE["until"], "until": RANGE["since"]},
        {"since": "2026-11-01T00:00:00Z", "until": "2026-11-09T00:00:01Z"},  # over 7 days
        {**RANGE, "worker": "abc"},
        {**RANGE, "worker": "-1"},
        {**RANGE, "worker": "999999"},
        {**RANGE, "stop_minutes": "soon"},
        {**RANGE, "stop_minutes": "0"},
        {**RANGE, "stop_minutes": "-5"},
        {**RANGE, "stop_minutes": "nan"},
        {**RANGE, "stop_minutes": "inf"},
        {**RANGE, "stop_minutes": "100000"},
    ],
)
def test_tracks_refuse_bad_parameters_with_a_short_text(client, stored, query):
    client.force_login(stored.ann)
    response = client.get("/teams/alpha/history/tracks.json", query)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert 0 < len(response.content) < 120 and b"<" not in response.content


# ---------------------------------------------------------------- moment.json


def test_moment_gives_each_workers_last_position_before(client, stored):
    client.force_login(stored.ann)
    response = client.get("/teams/alpha/history/moment.json", {"at": "2026-11-18T08:02:10Z"})
    assert response.status_code == 200
    positions = json.loads(response.content)["positions"]
    by_id = {position["id"]: position for position in positions}
    assert set(by_id) == {stored.a1.id, stored.a2.id}  # never Bea, of the other team
    assert (by_id[stored.a1.id]["ts"], by_id[stored.a1.id]["lng"]) == (T0 + 120, 2.152)
    assert by_id[stored.a2.id]["ts"] == round(T0 + 120.1234, 3)
    # The same moment with an offset; and one before anything was stored.
    same = client.get("/teams/alpha/history/moment.json", {"at": "2026-11-18T09:02:10+01:00"})
    assert json.loads(same.content)["positions"] == positions
    early = client.get("/teams/alpha/history/moment.json", {"at": "2026-11-18T00:00:00Z"})
    assert json.loads(early.content) == {"positions": []}


@pytest.mark.parametrize("at", [None, "", "ten o'clock", "2026-11-31T10:00:00Z", "12345"])
def test_moment_refuses_a_bad_time(client, stored, at):
    client.force_login(stored.ann)
    response = client.get("/teams/alpha/history/moment.json", {} if at is None else {"at": at})
    assert response.status_code == 400
    assert 0 < len(response.content) < 120


# ---------------------------------------------------------------- exports


def test_exports_download_the_selection(client, stored):
    client.force_login(stored.ann)
    query = {**RANGE, "worker": str(stored.a1.id)}
    for kind in ("gpx", "geojson", "csv"):
        response = client.get(f"/teams/alpha/history/export.{kind}", query)
        assert response.status_code == 200, kind
        assert response["Content-Disposition"].startswith("attachment;"), kind
        assert f".{kind}" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(body_of(response).decode())))
    assert len(rows) == 21
    assert {row["id"] for row in rows} == {str(stored.a1.id)}


def test_an_unknown_export_kind_is_not_found(client, stored):
    client.force_login(stored.ann)
    assert client.get("/teams/alpha/history/export.kml", RANGE).status_code == 404


def test_exports_refuse_bad_parameters(client, stored):
    client.force_login(stored.ann)
    response = client.get("/teams/alpha/history/export.csv", {"since": "soon"})
    assert response.status_code == 400
