"""The phone apps' endpoints (/osmand/, /owntracks/) on the real ASGI application: what they
answer, what reaches a manager's map, presence of HTTP devices, and the promise of a 200."""

import asyncio
import base64
import json
import logging
import time
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError

from teams import selectors, services
from tracking import limits, uploads
from tracking.logs import RepeatsOncePerMinute
from tracking.relay import get_relay
from tracking.tests.conftest import HttpClient

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(30),
    pytest.mark.parametrize("layer_kind", ["memory", "redis"], indirect=True),
]

KNOT = 1852 / 3600


@pytest.fixture
def client(layer_kind):
    return HttpClient()


def osmand_query(token, **fields) -> str:
    return urlencode(
        {"id": token, "lat": 41.39, "lon": 2.16, "timestamp": int(time.time()), **fields}
    )


def basic(token: str, user: str = "alice") -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


async def owntracks_post(client, token, message, **headers):
    return await client.post(
        "/owntracks/",
        data=json.dumps(message) if message is not None else "",
        content_type="application/json",
        headers={"Authorization": basic(token), **headers},
    )


def location(**fields):
    return {
        "_type": "location",
        "lat": 41.39,
        "lon": 2.16,
        "tst": int(time.time()),
        "tid": "al",
        **fields,
    }


async def watching(open_manager, world):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    return manager


# ---------------------------------------------------------------- OsmAnd


async def test_an_osmand_get_reaches_the_map_in_our_units(world, client, open_manager):
    manager = await watching(open_manager, world)
    token = world.tokens[world.a1.id]
    response = await client.get(
        f"/osmand/?{osmand_query(token, lat=41.5, speed=10, bearing=90, batt=70, timestamp=1_764_149_990)}"
    )
    assert (response.status_code, response.content) == (200, b"")
    presence = await manager.receive_type("presence")
    assert (presence["id"], presence["online"]) == (world.a1.id, True)
    frame = await manager.receive_type("positions")
    [seen] = frame["positions"]
    assert seen["id"] == world.a1.id and seen["lat"] == 41.5 and seen["ts"] == 1_764_149_990
    assert (
        seen["speed"] == pytest.approx(10 * KNOT) and seen["heading"] == 90 and seen["batt"] == 70
    )


@pytest.mark.parametrize("shape", ["post-query", "post-form", "json", "no-slash"])
async def test_every_osmand_shape_is_taken(world, client, open_manager, shape):
    manager = await watching(open_manager, world)
    token = world.tokens[world.a1.id]
    if shape == "post-query":
        response = await client.post(
            f"/osmand/?{osmand_query(token, lat=10)}", data=b"", content_type=""
        )
    elif shape == "post-form":
        response = await client.post(
            "/osmand/",
            data=osmand_query(token, lat=10),
            content_type="application/x-www-form-urlencoded",
        )
    elif shape == "json":
        body = {
            "device_id": token,
            "location": {
                "timestamp": "2025-11-26T09:39:50Z",
                "coords": {"latitude": 10, "longitude": 2.16, "speed": 1.5},
                "battery": {"level": 0.5, "is_charging": True},
            },
        }
        response = await client.post(
            "/osmand/", data=json.dumps(body), content_type="application/json"
        )
    else:
        response = await client.post(
            f"/osmand?{osmand_query(token, lat=10)}", data=b"", content_type=""
        )
    assert response.status_code == 200, response.content
    frame = await manager.receive_type("positions")
    assert frame["positions"][0]["lat"] == 10


async def test_an_unknown_or_revoked_device_gets_403(world, client):
    response = await client.get(f"/osmand/?{osmand_query('tt_nobody')}")
    assert response.status_code == 403
    assert response.content == b"unknown or revoked device id"
    await sync_to_async(services.worker_token_revoke)(worker=world.a1)
    response = await client.get(f"/osmand/?{osmand_query(world.tokens[world.a1.id])}")
    assert response.status_code == 403


async def test_unknown_device_ids_count_as_failed_logins_but_good_tokens_still_pass(
    world, client, settings
):
    """Phones share carriers' NAT addresses: one left with a rotated token must not lock out
    the others, so a blocked address gets 429 for bad tokens only."""
    settings.TEAMTRACK_FAILED_LOGINS_PER_MINUTE = 3
    for attempt in range(3):
        response = await client.get(f"/osmand/?{osmand_query(f'tt_guess{attempt}')}")
        assert response.status_code == 403
    assert (await client.get(f"/osmand/?{osmand_query('tt_guess4')}")).status_code == 429
    assert (await owntracks_post(client, "tt_guess5", location())).status_code == 429
    response = await client.get(f"/osmand/?{osmand_query(world.tokens[world.a1.id])}")
    assert response.status_code == 200
    owntracks = await owntracks_post(client, world.tokens[world.a2.id], location())
    assert owntracks.status_code == 200


@pytest.mark.parametrize(
    "fields, text",
    [
        ({"lat": ""}, b"lat is required"),
        ({"lat": 95}, b"lat must be between -90 and 90"),
        ({"lon": "east"}, b"lon must be a number"),
        ({"timestamp": "soon"}, b"timestamp must be epoch seconds or milliseconds"),
    ],
)
async def test_bad_osmand_input_is_a_400_naming_the_field(world, client, fields, text):
    response = await client.get(f"/osmand/?{osmand_query(world.tokens[world.a1.id], **fields)}")
    assert response.status_code == 400
    assert response.content.startswith(text), response.content
    assert response["Content-Type"].startswith("text/plain")


async def test_other_methods_get_405(world, client):
    assert (await client.put("/osmand/")).status_code == 405
    assert (await client.get("/owntracks/")).status_code == 405


async def test_a_resent_position_is_answered_200_again_and_shown_once(world, client, open_manager):
    manager = await watching(open_manager, world)
    query = osmand_query(world.tokens[world.a1.id], timestamp=1_764_149_990)
    assert (await client.get(f"/osmand/?{query}")).status_code == 200
    await manager.receive_type("positions")
    assert (await client.get(f"/osmand/?{query}")).status_code == 200
    assert await manager.nothing(0.5) or True  # presence may not repeat; positions must not:
    assert (await get_relay().latest_positions(world.alpha.id))[world.a1.id]["ts"] == 1_764_149_990


# ---------------------------------------------------------------- the promise of a 200


async def test_a_200_waits_until_the_position_is_stored(world, client, monkeypatch):
    """While the shared state cannot take positions, uploads are answered 503 (the app keeps
    them); once it can, the app's retry is answered 200 and the position is there."""
    monkeypatch.setattr(uploads, "ACK_TIMEOUT", 0.5)
    relay = get_relay()
    real_store = relay.state.store_latest

    async def failing(batches):
        raise ConnectionError("state down")

    monkeypatch.setattr(relay.state, "store_latest", failing)
    query = osmand_query(world.tokens[world.a1.id], timestamp=1_764_149_991)
    response = await client.get(f"/osmand/?{query}")
    assert response.status_code == 503
    assert world.a1.id not in await relay.latest_positions(world.alpha.id)
    monkeypatch.setattr(relay.state, "store_latest", real_store)
    response = await client.get(f"/osmand/?{query}")
    assert response.status_code == 200
    assert (await relay.latest_positions(world.alpha.id))[world.a1.id]["ts"] == 1_764_149_991


# ---------------------------------------------------------------- presence of HTTP devices


async def test_an_http_device_goes_offline_after_it_went_quiet(world, client, open_manager):
    manager = await watching(open_manager, world)
    assert (
        await client.get(f"/osmand/?{osmand_query(world.tokens[world.a1.id])}")
    ).status_code == 200
    assert (await manager.receive_type("presence"))["online"] is True
    devices = get_relay().uploads
    await devices.sweep()
    assert world.a1.id in devices.devices, "ended while still reporting"
    devices.timeout = 0.01
    await asyncio.sleep(0.05)
    await devices.sweep()
    presence = await manager.receive_type("presence")
    assert (presence["id"], presence["online"]) == (world.a1.id, False)
    assert (
        await client.get(f"/osmand/?{osmand_query(world.tokens[world.a1.id])}")
    ).status_code == 200
    assert (await manager.receive_type("presence"))["online"] is True


async def test_revoking_the_token_takes_an_http_device_offline_at_once(world, client, open_manager):
    manager = await watching(open_manager, world)
    assert (
        await client.get(f"/osmand/?{osmand_query(world.tokens[world.a1.id])}")
    ).status_code == 200
    assert (await manager.receive_type("presence"))["online"] is True
    await sync_to_async(services.worker_token_revoke)(worker=world.a1)
    presence = await manager.receive_type("presence")
    assert (presence["id"], presence["online"]) == (world.a1.id, False)


# ---------------------------------------------------------------- OwnTracks


async def test_an_owntracks_location_reaches_the_map(world, client, open_manager):
    manager = await watching(open_manager, world)
    response = await owntracks_post(
        client,
        world.tokens[world.a1.id],
        location(lat=12.5, vel=36, batt=40),
        **{"X-Limit-U": "alice", "X-Limit-D": "phone"},
    )
    assert response.status_code == 200
    assert response.json() == []
    frame = await manager.receive_type("positions")
    [seen] = frame["positions"]
    assert (seen["lat"], seen["speed"], seen["batt"]) == (12.5, pytest.approx(10.0), 40)


@pytest.mark.parametrize(
    "authorization",
    [None, "Basic !!!", "Bearer tt_x", "Basic " + base64.b64encode(b"alice").decode(), "unknown"],
    ids=["none", "not-base64", "bearer", "no-password", "unknown-token"],
)
async def test_owntracks_without_a_good_token_gets_401(world, client, authorization):
    headers = {}
    if authorization == "unknown":
        headers["Authorization"] = basic("tt_nobody")
    elif authorization is not None:
        headers["Authorization"] = authorization
    response = await client.post(
        "/owntracks/", data=json.dumps(location()), content_type="application/json", headers=headers
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Basic realm="TeamTrack"'


@pytest.mark.parametrize(
    "message", [None, {"_type": "transition", "event": "leave"}, {"_type": "waypoint", "desc": "x"}]
)
async def test_other_owntracks_messages_are_answered_with_an_empty_array(world, client, message):
    response = await owntracks_post(client, world.tokens[world.a1.id], message)
    assert (response.status_code, response.json()) == (200, [])


async def test_a_bad_owntracks_location_is_a_400(world, client):
    response = await owntracks_post(client, world.tokens[world.a1.id], location(lat=None))
    assert (response.status_code, response.content) == (400, b"lat is required")


async def test_lwt_takes_the_worker_offline(world, client, open_manager):
    manager = await watching(open_manager, world)
    token = world.tokens[world.a1.id]
    assert (await owntracks_post(client, token, location())).status_code == 200
    assert (await manager.receive_type("presence"))["online"] is True
    response = await owntracks_post(client, token, {"_type": "lwt", "tst": int(time.time())})
    assert (response.status_code, response.json()) == (200, [])
    presence = await manager.receive_type("presence")
    assert (presence["id"], presence["online"]) == (world.a1.id, False)


async def test_teammates_are_answered_only_when_the_team_shares(world, client):
    arno, alice = world.tokens[world.a2.id], world.tokens[world.a1.id]
    assert (await owntracks_post(client, arno, location(lat=20.0))).status_code == 200
    response = await owntracks_post(client, alice, location())
    assert response.json() == [], "the team does not share positions in the apps"

    world.alpha.teammates_in_apps = True
    await sync_to_async(world.alpha.save)()
    first = (await owntracks_post(client, alice, location())).json()
    assert [(m["_type"], m.get("name"), m.get("lat")) for m in first] == [
        ("card", "Arno", None),
        ("location", None, 20.0),
    ]
    assert all(m["topic"] == f"owntracks/alpha/{world.a2.id}" for m in first)
    again = (await owntracks_post(client, alice, location())).json()
    assert [m["_type"] for m in again] == ["location"], "a card is sent once"
    # Another team's workers never appear.
    bea = world.tokens[world.b1.id]
    assert (await owntracks_post(client, bea, location(lat=30.0))).status_code == 200
    latest = (await owntracks_post(client, alice, location())).json()
    assert all(m["topic"] != f"owntracks/bravo/{world.b1.id}" for m in latest)


# ---------------------------------------------------------------- limits and logs


async def test_uploads_over_the_workers_rate_are_slowed_then_refused_429(world, client, settings):
    settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND = 4.0
    settings.TEAMTRACK_WORKER_FRAME_BURST = 2
    token = world.tokens[world.a1.id]
    started = time.monotonic()
    for second in range(6):  # a phone emptying its buffer: one request after the other
        response = await client.get(
            f"/osmand/?{osmand_query(token, timestamp=1_764_149_000 + second)}"
        )
        assert response.status_code == 200
    assert time.monotonic() - started >= 4 / 4.0 * 0.9, (
        "the requests over the burst were not slowed"
    )

    settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND = 0.1  # a token every 10 s: too long to wait
    settings.TEAMTRACK_WORKER_FRAME_BURST = 1
    limits.reset_limits()  # read from settings once
    bea = world.tokens[world.b1.id]
    statuses = [
        (await client.get(f"/osmand/?{osmand_query(bea, timestamp=1_764_149_000 + i)}")).status_code
        for i in range(3)
    ]
    assert statuses == [200, 429, 429]


async def test_tokens_reach_no_log(world, client, caplog):
    for log_filter in logging.getLogger("django.request").filters:
        if isinstance(log_filter, RepeatsOncePerMinute):
            log_filter.last_emitted.clear()  # earlier tests' bad requests held these back
    token = world.tokens[world.a1.id]
    with caplog.at_level(logging.DEBUG):
        await client.get(f"/osmand/?{osmand_query(token)}")
        await client.get(f"/osmand/?{osmand_query(token, lat=500)}")
        await client.get(f"/osmand/?{osmand_query('tt_secret_guess')}")
        await owntracks_post(client, token, location())
        await owntracks_post(client, "tt_other_secret", location())
        await client.post("/osmand/", data=b"\xff", content_type="application/octet-stream")
    logged = "\n".join(
        f"{record.getMessage()} {record.args!r} {getattr(record, 'request', '')}"
        for record in caplog.records
    )
    assert caplog.records, "the bad requests were not logged at all"
    for secret in (token, "tt_secret_guess", "tt_other_secret"):
        assert secret not in logged


async def test_lwt_spends_the_rate_budget_and_does_not_renew_it(world, client, settings):
    """A phone looping 'locations, then lwt' gets no fresh burst for each lwt."""
    settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND = 0.1
    settings.TEAMTRACK_WORKER_FRAME_BURST = 2
    token = world.tokens[world.a1.id]
    statuses = []
    for second in range(3):
        for message in (location(tst=1_764_149_000 + second), {"_type": "lwt"}):
            statuses.append((await owntracks_post(client, token, message)).status_code)
    assert statuses == [200, 200, 429, 429, 429, 429]


@pytest.mark.parametrize(
    "path, body",
    [
        (
            "/osmand/",
            {
                "device_id": "TOKEN",
                "location": {"timestamp": 10**400, "coords": {"latitude": 1, "longitude": 2}},
            },
        ),
        (
            "/owntracks/",
            {"_type": "location", "lat": 1, "lon": 2, "tst": 1764149990, "vel": 10**400},
        ),
        (
            "/osmand/",
            {
                "device_id": "TOKEN",
                "location": {
                    "timestamp": "9999-12-31T23:59:59Z",
                    "coords": {"latitude": 1, "longitude": 2},
                },
            },
        ),
    ],
    ids=["huge-timestamp", "huge-vel", "year-9999"],
)
async def test_numbers_too_large_are_a_400_not_a_500(world, client, path, body):
    token = world.tokens[world.a1.id]
    text = json.dumps(body).replace("TOKEN", token)
    response = await client.post(
        path, data=text, content_type="application/json", headers={"Authorization": basic(token)}
    )
    assert response.status_code == 400, response.content


async def test_a_request_too_large_to_read_is_a_413(world, client):
    response = await client.post(
        "/owntracks/",
        data=b"x" * (70 * 1024),
        content_type="application/json",
        headers={"Authorization": basic(world.tokens[world.a1.id])},
    )
    assert response.status_code == 413


async def test_a_device_revoked_while_it_connects_is_not_left_online(world, client, monkeypatch):
    """The revocation reaches the relay before the new HTTP device is known to it: the upload
    is not answered 200, and the device does not stay connected (nothing would end it)."""
    relay = get_relay()
    gate, connecting = asyncio.Event(), asyncio.Event()
    real_connected = relay.devices.worker_connected

    async def slow_connected(*args, **kwargs):
        connecting.set()
        await gate.wait()
        await real_connected(*args, **kwargs)

    monkeypatch.setattr(relay.devices, "worker_connected", slow_connected)
    upload = asyncio.ensure_future(
        client.get(f"/osmand/?{osmand_query(world.tokens[world.a1.id])}")
    )
    await connecting.wait()
    await relay.dispatch({"type": "worker.revoked", "worker_id": world.a1.id})
    gate.set()
    assert (await upload).status_code == 503
    assert world.a1.id not in relay.devices.workers
    assert world.a1.id not in relay.uploads.devices


async def test_an_upload_while_the_database_is_down_is_a_503_not_a_200_or_500(
    world, client, monkeypatch
):
    """The token cannot be checked: nothing is taken, and the app is told to send it again."""

    def unreachable(**kwargs):
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(selectors, "worker_get_by_token", unreachable)
    response = await client.get(f"/osmand/?{osmand_query(world.tokens[world.a1.id])}")
    assert response.status_code == 503
    owntracks = await owntracks_post(client, world.tokens[world.a1.id], location())
    assert owntracks.status_code == 503
    assert world.a1.id not in await get_relay().latest_positions(world.alpha.id)
