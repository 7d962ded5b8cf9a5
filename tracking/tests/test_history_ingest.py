"""Every accepted position of every protocol is stored, before its device is acknowledged; a
database that is down holds acks back but not the live map, and the resends are stored once it
is back."""

import base64
import json
import time
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async

from tracking import history_writer
from tracking.models import StoredPosition
from tracking.relay import get_relay
from tracking.tests.conftest import HttpClient

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(60),
    pytest.mark.parametrize(
        "layer_kind", ["memory", "redis", "redis-core", "kafka"], indirect=True
    ),
]


@sync_to_async
def stored(worker) -> list[tuple[float, float]]:
    rows = StoredPosition.objects.filter(worker=worker).order_by("ts")
    assert all(row.team_id == worker.team_id for row in rows)
    return [(row.ts, row.lat) for row in rows]


async def test_every_position_of_a_socket_frame_is_stored_before_its_ack(
    world, layer_kind, open_worker
):
    device = await open_worker(world.tokens[world.a1.id])
    now = time.time()
    batch = [{"lat": 41.0 + i / 100, "lng": 2.0, "ts": now - 10 + i, "seq": i} for i in range(5)]
    await device.send({"type": "batch", "positions": batch})
    ack = await device.receive_type("ack", timeout=5)
    assert ack["seq"] == 4
    # Acknowledged means committed: the rows are there when the ack is.
    assert await stored(world.a1) == [(p["ts"], p["lat"]) for p in batch]
    await device.send({"type": "batch", "positions": batch})  # resent whole
    assert (await device.receive_type("ack", timeout=5))["seq"] == 4
    assert len(await stored(world.a1)) == 5


async def test_phone_app_uploads_are_stored_before_their_200(world, layer_kind):
    client = HttpClient()
    ts = int(time.time())
    token = world.tokens[world.a1.id]
    response = await client.get(
        f"/osmand/?{urlencode({'id': token, 'lat': 41.5, 'lon': 2.1, 'timestamp': ts})}"
    )
    assert response.status_code == 200
    assert await stored(world.a1) == [(ts, 41.5)]
    basic = base64.b64encode(f"arno:{world.tokens[world.a2.id]}".encode()).decode()
    location = {"_type": "location", "lat": 41.6, "lon": 2.2, "tst": ts, "tid": "ar"}
    response = await client.post(
        "/owntracks/",
        data=json.dumps(location),
        content_type="application/json",
        headers={"Authorization": f"Basic {basic}"},
    )
    assert response.status_code == 200
    assert await stored(world.a2) == [(ts, 41.6)]


async def test_with_the_database_down_the_map_moves_but_nothing_is_acknowledged(
    world, layer_kind, open_worker, open_manager, monkeypatch
):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    device = await open_worker(world.tokens[world.a1.id])
    real_insert = history_writer.insert_rows
    down = True

    def insert(rows):
        if down:
            raise ConnectionError("the database is down")
        real_insert(rows)

    monkeypatch.setattr(get_relay().history, "store", insert)
    position = {"lat": 42.0, "lng": 2.0, "ts": time.time(), "seq": 1}
    await device.send(position)
    frame = await manager.receive_type("positions", timeout=5)
    assert frame["positions"][0]["lat"] == 42.0  # the live map moved
    assert await device.nothing(1.0)  # ... but no ack: the position is not stored
    assert await stored(world.a1) == []
    down = False
    await device.send(position)  # the device resends what was not acknowledged
    acks = set()
    while 1 not in acks:
        acks.add((await device.receive_type("ack", timeout=5))["seq"])
    assert await stored(world.a1) == [(position["ts"], 42.0)]
