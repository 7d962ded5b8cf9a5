"""The history API (tracking/api/): who may call it (a session or a personal token; 401
otherwise), what each caller sees (their own teams; another's is 404 on every endpoint), the
filters and their 400s, keyset pagination, the live feed's field names, and the exports."""

import csv
import io
import json
import logging
from datetime import UTC, datetime, timedelta

import gpxpy
import pytest
from asgiref.sync import async_to_sync
from django.test import Client
from django.utils import timezone

from teams import services
from teams.models import ApiToken
from tracking.models import StoredPosition

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 29, 10, 0, tzinfo=UTC).timestamp()
ISO_T0 = "2026-11-29T10:00:00Z"


def endpoints(slug: str) -> list[str]:
    base = f"/api/v1/teams/{slug}/"
    return [base, f"{base}workers/", f"{base}positions/"] + [
        f"{base}export.{kind}" for kind in ("gpx", "geojson", "csv")
    ]


EVERY_ENDPOINT = ["/api/v1/teams/", *endpoints("alpha")]


def store(worker, ts, lat=41.0, lng=2.0, **optional):
    return StoredPosition.objects.create(
        team=worker.team, worker=worker, ts=ts, lat=lat, lng=lng, **optional
    )


def body(response) -> bytes:
    if not response.streaming:
        return response.content

    async def collect():
        return [piece async for piece in response.streaming_content]

    pieces = async_to_sync(collect)() if response.is_async else list(response.streaming_content)
    return b"".join(piece if isinstance(piece, bytes) else piece.encode() for piece in pieces)


@pytest.fixture
def api(world):
    """A client with ann's personal token (manager of alpha); `get` answers status and JSON."""
    _, token = services.api_token_create(user=world.ann, name="tests")

    class Api:
        def __init__(self, token):
            self.token = token
            self.client = Client()

        def get(self, url, token=None, **params):
            token = token or self.token
            return self.client.get(url, params, HTTP_AUTHORIZATION=f"Bearer {token}")

        def json(self, url, **params):
            response = self.get(url, **params)
            assert response.status_code == 200, response.content
            return response.json()

    return Api(token)


@pytest.fixture
def track(world):
    """Alice: three positions (the first with every optional field); Arno: one at the same ts as
    one of Alice's; Bea (bravo): one."""
    store(world.a1, T0, acc=5.0, speed=1.5, heading=90.0, alt=10.0, batt=80.0)
    store(world.a1, T0 + 10, 41.1, 2.1, alt=12.5)
    store(world.a2, T0 + 10, 42.0, 3.0)
    store(world.a1, T0 + 3600, 43.0, 4.0)
    store(world.b1, T0 + 5, 50.0, 5.0)


# ---------------------------------------------------------------- authentication


def test_every_endpoint_needs_credentials(client, world):
    for url in EVERY_ENDPOINT:
        response = client.get(url)
        assert response.status_code == 401, url
        assert response["WWW-Authenticate"] == "Bearer"
        assert response.json() == {"detail": "Authentication credentials were not provided."}


@pytest.mark.parametrize(
    "header",
    [
        "Bearer nope",
        "Bearer ",
        "Bearer",
        "Token tta_unknown",
        "Bearer two words",
        "Bearer tta_\u00e9\u00ff",  # odd bytes (the header is read as Latin-1)
        "bearer  ",
    ],
)
def test_a_bad_token_is_401_with_a_short_text(client, world, header):
    for url in EVERY_ENDPOINT:
        response = client.get(url, HTTP_AUTHORIZATION=header)
        assert response.status_code == 401, (url, header)
        assert set(response.json()) == {"detail"} and len(response.json()["detail"]) < 60


def test_a_revoked_token_a_device_token_and_an_inactive_users_token_are_401(api, world):
    assert api.get("/api/v1/teams/", token=world.tokens[world.a1.id]).status_code == 401
    assert api.get("/api/v1/teams/").status_code == 200
    world.ann.is_active = False
    world.ann.save()
    assert api.get("/api/v1/teams/").status_code == 401
    world.ann.is_active = True
    world.ann.save()
    services.api_token_revoke(user=world.ann, token_id=ApiToken.objects.get().pk)
    response = api.get("/api/v1/teams/")
    assert response.status_code == 401 and response.json() == {
        "detail": "Invalid or revoked token."
    }


def test_a_session_and_a_token_both_authenticate(client, api, world):
    assert api.json("/api/v1/teams/") == [{"slug": "alpha", "name": "Alpha"}]
    token_keyword = client.get("/api/v1/teams/", HTTP_AUTHORIZATION=f"Token {api.token}")
    assert token_keyword.json() == [{"slug": "alpha", "name": "Alpha"}]
    client.force_login(world.ann)
    for url in EVERY_ENDPOINT:
        assert client.get(url).status_code == 200, url
    assert client.get("/api/v1/teams/").json() == [{"slug": "alpha", "name": "Alpha"}]


def test_a_bad_token_is_refused_even_with_a_session(client, world):
    client.force_login(world.ann)
    assert client.get("/api/v1/teams/", HTTP_AUTHORIZATION="Bearer nope").status_code == 401


def test_the_api_is_read_only(client, api, world):
    for url in EVERY_ENDPOINT:
        response = api.client.post(url, HTTP_AUTHORIZATION=f"Bearer {api.token}")
        assert response.status_code == 405, url
    client.force_login(world.ann)
    assert client.delete("/api/v1/teams/alpha/").status_code in (403, 405)  # CSRF, or 405


def test_last_use_is_recorded_at_most_once_a_minute(api, world):
    api_token = ApiToken.objects.get()
    assert api_token.last_used_at is None
    api.json("/api/v1/teams/")
    first = ApiToken.objects.get().last_used_at
    assert first is not None and timezone.now() - first < timedelta(seconds=5)
    api.json("/api/v1/teams/")
    assert ApiToken.objects.get().last_used_at == first  # within the minute: no write
    ApiToken.objects.update(last_used_at=first - timedelta(minutes=2))
    api.json("/api/v1/teams/")
    assert ApiToken.objects.get().last_used_at > first - timedelta(minutes=2)


def test_tokens_never_reach_a_log(api, world, caplog):
    caplog.set_level(logging.DEBUG)
    api.get("/api/v1/teams/")
    api.get("/api/v1/teams/bravo/positions/", since="nonsense")
    api.get("/api/v1/teams/alpha/positions/", since="nonsense")
    api.get("/api/v1/teams/", token=api.token + "x")
    assert api.token not in caplog.text


# ---------------------------------------------------------------- what a caller sees


def test_teams_are_the_ones_the_map_allows(api, world, django_user_model):
    assert api.json("/api/v1/teams/") == [{"slug": "alpha", "name": "Alpha"}]
    _, bobs = services.api_token_create(user=world.bob, name="b")
    assert api.json("/api/v1/teams/", token=bobs) == [{"slug": "bravo", "name": "Bravo"}]
    _, roots = services.api_token_create(user=world.root, name="r")
    assert [team["slug"] for team in api.json("/api/v1/teams/", token=roots)] == ["alpha", "bravo"]
    nobody = django_user_model.objects.create_user("nobody")
    _, nobodys = services.api_token_create(user=nobody, name="n")
    assert api.json("/api/v1/teams/", token=nobodys) == []
    assert api.json("/api/v1/teams/alpha/") == {"slug": "alpha", "name": "Alpha"}


def test_another_managers_team_is_404_on_every_endpoint_as_a_missing_one(api, world, track):
    for theirs, missing in zip(endpoints("bravo"), endpoints("nope"), strict=True):
        response = api.get(theirs, since=ISO_T0)
        assert response.status_code == 404, theirs
        assert (
            response.json() == api.get(missing, since=ISO_T0).json() == {"detail": "No such team."}
        )
        # Bad filters on another's team say nothing either: 404 before 400.
        assert api.get(theirs, worker="x").status_code == 404
    client = Client()
    client.force_login(world.ann)
    for url in endpoints("bravo"):
        assert client.get(url).status_code == 404, url


def test_workers_are_all_the_teams_workers(api, world):
    services.worker_update(worker=world.a2, name="Arno", active=False, team=world.alpha)
    assert api.json("/api/v1/teams/alpha/workers/") == [
        {"id": world.a1.id, "name": "Alice", "active": True},
        {"id": world.a2.id, "name": "Arno", "active": False},
    ]


# ---------------------------------------------------------------- positions


def test_positions_carry_the_live_feeds_names_and_only_the_fields_they_have(api, world, track):
    page = api.json("/api/v1/teams/alpha/positions/")
    assert page["next"] is None
    assert page["results"] == [
        {"id": world.a1.id, "lat": 41.0, "lng": 2.0, "ts": T0, "acc": 5.0, "speed": 1.5,
         "heading": 90.0, "alt": 10.0, "batt": 80.0},
        {"id": world.a1.id, "lat": 41.1, "lng": 2.1, "ts": T0 + 10, "alt": 12.5},
        {"id": world.a2.id, "lat": 42.0, "lng": 3.0, "ts": T0 + 10},
        {"id": world.a1.id, "lat": 43.0, "lng": 4.0, "ts": T0 + 3600},
    ]  # fmt: skip


def test_position_filters(api, world, track):
    url = "/api/v1/teams/alpha/positions/"

    def stamps(**params):
        return [(p["id"], p["ts"]) for p in api.json(url, **params)["results"]]

    a1, a2 = world.a1.id, world.a2.id
    assert stamps(worker=a2) == [(a2, T0 + 10)]
    assert stamps(worker=world.b1.id) == []  # another team's worker: nothing, not an error
    assert stamps(since="2026-11-29T10:00:10Z") == [(a1, T0 + 10), (a2, T0 + 10), (a1, T0 + 3600)]
    assert stamps(until="2026-11-29T11:00:00+00:00") == [(a1, T0), (a1, T0 + 10), (a2, T0 + 10)]
    assert stamps(since="2026-11-29T11:00:00+01:00", until="2026-11-29T10:00:10") == [(a1, T0)]
    assert stamps(worker=a1, since=ISO_T0, until="2026-11-29T10:30:00Z") == [
        (a1, T0),
        (a1, T0 + 10),
    ]


@pytest.mark.parametrize(
    "params",
    [
        {"worker": "alice"},
        {"worker": "-1"},
        {"worker": "9" * 20},  # beyond any database id: a 400, never the database's 500
        {"since": "yesterday"},
        {"until": "2026-13-01T00:00:00Z"},
        {"since": "2026-11-29T11:00:00Z", "until": ISO_T0},
        {"cursor": "not-a-cursor"},
        {"cursor": "\u00e9"},
        {"page_size": "0"},
        {"page_size": "10001"},
        {"page_size": "ten"},
    ],
)
def test_bad_filters_are_400_with_the_reason(api, world, track, params):
    response = api.get("/api/v1/teams/alpha/positions/", **params)
    assert response.status_code == 400
    assert set(response.json()) == {"detail"} and response.json()["detail"]
    if "cursor" not in params and "page_size" not in params:
        for kind in ("gpx", "geojson", "csv"):
            export = api.get(f"/api/v1/teams/alpha/export.{kind}", **params)
            assert export.status_code == 400 and export.json() == response.json()


def test_pagination_walks_every_position_exactly_once(api, world):
    # Both workers report on the same seconds: pages must break inside runs of equal ts.
    for second in range(23):
        store(world.a1, T0 + second)
        if second % 2 == 0:
            store(world.a2, T0 + second)  # the same ts as Alice's
        store(world.b1, T0 + second)  # another team's, never seen
    expected = list(
        StoredPosition.objects.filter(team=world.alpha)
        .order_by("ts", "id")
        .values_list("worker_id", "ts")
    )
    assert len(expected) == 23 + 12
    seen, pages = [], 0
    url = f"/api/v1/teams/alpha/positions/?page_size=4&until={ISO_T0.replace('10:00', '11:00')}"
    while url:
        response = api.get(url)
        assert response.status_code == 200
        page = response.json()
        assert len(page["results"]) <= 4
        seen += [(p["id"], p["ts"]) for p in page["results"]]
        url, pages = page["next"], pages + 1
        if url:
            assert "page_size=4" in url and "until=" in url  # the filters carry on
    assert seen == expected
    assert pages == 9  # 35 positions, 4 a page


def test_a_page_ending_on_the_last_position_has_no_next(api, world):
    for second in range(4):
        store(world.a1, T0 + second)
    page = api.json("/api/v1/teams/alpha/positions/", page_size=4)
    assert len(page["results"]) == 4 and page["next"] is None
    page = api.json("/api/v1/teams/alpha/positions/", page_size=3)
    assert page["next"].startswith("http://testserver/api/v1/teams/alpha/positions/?")


# ---------------------------------------------------------------- exports


def test_exports_are_the_files_with_the_same_filters(api, world, track):
    params = {"since": ISO_T0, "until": "2026-11-29T10:30:00Z"}
    gpx = api.get("/api/v1/teams/alpha/export.gpx", **params)
    assert gpx.status_code == 200 and gpx["Content-Type"] == "application/gpx+xml"
    assert gpx["Content-Disposition"].startswith('attachment; filename="alpha-')
    tracks = gpxpy.parse(body(gpx).decode()).tracks
    assert sorted(len(t.segments[0].points) for t in tracks) == [1, 2]  # not the one at 11:00

    geojson = api.get("/api/v1/teams/alpha/export.geojson", worker=world.a1.id, **params)
    assert geojson.status_code == 200 and geojson["Content-Type"] == "application/geo+json"
    (feature,) = json.loads(body(geojson))["features"]
    assert feature["geometry"]["type"] == "LineString"
    assert len(feature["geometry"]["coordinates"]) == 2

    # Whatever the client accepts, an export is its file.
    export = api.client.get(
        "/api/v1/teams/alpha/export.csv",
        params,
        HTTP_AUTHORIZATION=f"Bearer {api.token}",
        HTTP_ACCEPT="text/html",
    )
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(body(export).decode())))
    assert rows[0][:5] == ["id", "name", "lat", "lng", "ts"] and len(rows) == 1 + 3


# ---------------------------------------------------------------- schema and docs


def test_the_schema_is_public_and_documents_every_endpoint(client):
    response = client.get("/api/v1/schema/?format=json", HTTP_AUTHORIZATION="Bearer nope")
    assert response.status_code == 200
    schema = response.json()
    assert set(schema["paths"]) == {
        "/api/v1/teams/",
        "/api/v1/teams/{slug}/",
        "/api/v1/teams/{slug}/workers/",
        "/api/v1/teams/{slug}/positions/",
        "/api/v1/teams/{slug}/export.gpx",
        "/api/v1/teams/{slug}/export.geojson",
        "/api/v1/teams/{slug}/export.csv",
    }
    gpx = schema["paths"]["/api/v1/teams/{slug}/export.gpx"]["get"]
    assert set(gpx["responses"]["200"]["content"]) == {"application/gpx+xml"}
    names = {
        p["name"] for p in schema["paths"]["/api/v1/teams/{slug}/positions/"]["get"]["parameters"]
    }
    assert names == {"slug", "worker", "since", "until", "cursor", "page_size"}
    assert schema["components"]["securitySchemes"]["apiToken"]["scheme"] == "bearer"


def test_the_docs_page_renders_the_schema_without_scripts(client):
    response = client.get("/api/v1/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    assert "<script" not in page and "style=" not in page
    assert "GET /api/v1/teams/{slug}/positions/" in page and "page_size" in page
    assert 'id="schema-Position"' in page and "application/gpx+xml" in page
    assert "script-src" not in response["Content-Security-Policy"]  # the site's own policy
    assert "default-src 'self'" in response["Content-Security-Policy"]
