"""The worker and manager sockets on the real ASGI application, with the in-memory layer."""

import asyncio
import gc
import json
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError
from django.test import Client
from prometheus_client import REGISTRY

from teams import selectors, services
from teams.models import Worker
from teamtrack import control
from tracking import consumers, limits, protocol
from tracking.relay import get_relay

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(20),
    pytest.mark.usefixtures("layer_kind"),
]


def position(lat=41.39, lng=2.16, ts=None, **extra):
    return {"lat": lat, "lng": lng, "ts": time.time() if ts is None else ts, **extra}


# ---------------------------------------------------------------- worker authentication


async def test_worker_with_bearer_token_is_relayed_to_its_manager(world, open_worker, open_manager):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send(position(lat=41.5, lng=2.2, ts=1_700_000_000.5, acc=4.0, seq=7))
    frame = await manager.receive_type("positions")
    assert frame["positions"] == [
        {"id": world.a1.id, "lat": 41.5, "lng": 2.2, "ts": 1_700_000_000.5, "acc": 4.0}
    ]


async def test_worker_may_authenticate_with_a_first_frame(world, open_worker, open_manager):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker()
    await worker.send({"type": "auth", "token": world.tokens[world.a2.id]})
    await worker.send(position(lat=10.0))
    frame = await manager.receive_type("positions")
    assert [(p["id"], p["lat"]) for p in frame["positions"]] == [(world.a2.id, 10.0)]


@pytest.mark.parametrize(
    "token", ["tt_unknown-token-value", "", "Basic xyz"], ids=["unknown", "empty", "wrong-scheme"]
)
async def test_worker_with_a_bad_token_is_closed_4401(world, open_worker, token):
    worker = await open_worker(token)
    if token == "":
        await worker.send(position())  # no header at all: the first frame must be auth
    assert await worker.closed_with() == protocol.CLOSE_UNAUTHENTICATED


async def test_worker_that_never_authenticates_is_closed_after_the_timeout(
    world, open_worker, monkeypatch
):
    monkeypatch.setattr(protocol, "AUTH_TIMEOUT", 0.2)
    worker = await open_worker()
    assert await worker.closed_with(timeout=2) == protocol.CLOSE_UNAUTHENTICATED


async def test_token_in_the_query_string_is_ignored(world, open_worker):
    worker = await open_worker(path=f"/ws/worker/?token={world.tokens[world.a1.id]}")
    await worker.send(position())
    assert await worker.closed_with() == protocol.CLOSE_UNAUTHENTICATED


async def test_revoked_token_is_refused(world, open_worker):
    await sync_to_async(services.worker_token_revoke)(worker=world.a1)
    worker = await open_worker(world.tokens[world.a1.id])
    assert await worker.closed_with() == protocol.CLOSE_UNAUTHENTICATED


async def test_inactive_worker_is_refused(world, open_worker):
    await sync_to_async(services.worker_update)(
        worker=world.a1, name="Alice", active=False, team=world.alpha
    )
    worker = await open_worker(world.tokens[world.a1.id])
    assert await worker.closed_with() == protocol.CLOSE_UNAUTHENTICATED


@pytest.mark.parametrize("change", ["revoke", "rotate", "deactivate"])
async def test_open_socket_is_closed_4401_when_its_token_stops_working(
    world, open_worker, open_manager, change
):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send(position())
    await manager.receive_type("positions")
    if change == "revoke":
        await sync_to_async(services.worker_token_revoke)(worker=world.a1)
    elif change == "rotate":
        await sync_to_async(services.worker_token_rotate)(worker=world.a1)
    else:
        await sync_to_async(services.worker_update)(
            worker=world.a1, name="Alice", active=False, team=world.alpha
        )
    assert await worker.closed_with() == protocol.CLOSE_UNAUTHENTICATED
    presence = await manager.receive_type("presence")
    assert presence == {"type": "presence", "id": world.a1.id, "name": "Alice", "online": False}


async def test_rotated_token_works_and_old_one_does_not(world, open_worker):
    new_token = await sync_to_async(services.worker_token_rotate)(worker=world.a1)
    old = await open_worker(world.tokens[world.a1.id])
    assert await old.closed_with() == protocol.CLOSE_UNAUTHENTICATED
    new = await open_worker(new_token)
    await new.send(
        position(lat=100.0)
    )  # an error frame proves the socket is open and authenticated
    assert (await new.receive())["code"] == "out_of_range"


async def test_a_late_revocation_leaves_the_socket_of_the_new_token_open(world, open_worker):
    new_token = await sync_to_async(services.worker_token_rotate)(worker=world.a1)
    new = await open_worker(new_token)
    # The rotation's message reaches this replica only now (the Kafka layer can be seconds late).
    await get_relay().dispatch({"type": control.WORKER_REVOKED, "worker_id": world.a1.id})
    await new.send(position(seq=1))
    assert (await new.receive_type("ack"))["seq"] == 1


async def test_a_login_storm_is_let_in_a_few_logins_at_a_time(world, open_worker, monkeypatch):
    """Sockets that log in together wait at the replica's login gate rather than each hold a
    login half done (tracking.limits.LOGINS_AT_ONCE); every one of them gets in."""
    monkeypatch.setattr(limits, "LOGINS_AT_ONCE", 3)
    in_progress = most = 0
    log_in = consumers.WorkerConsumer.log_in

    async def counted(self, token):
        nonlocal in_progress, most
        in_progress += 1
        most = max(most, in_progress)
        try:
            await log_in(self, token)
        finally:
            in_progress -= 1

    monkeypatch.setattr(consumers.WorkerConsumer, "log_in", counted)
    created = [
        await sync_to_async(services.worker_create)(team=world.alpha, name=f"Storm {i}")
        for i in range(20)
    ]
    sockets = await asyncio.gather(*(open_worker(token) for _, token in created))
    for socket in sockets:
        await socket.send(position(seq=1))
    for socket in sockets:
        assert (await socket.receive_type("ack", timeout=5))["seq"] == 1
    assert most == 3


async def test_a_login_that_waits_too_long_at_the_gate_is_told_to_try_again(
    world, open_worker, monkeypatch
):
    """A login that cannot start within LOGIN_WAIT_SECONDS is closed 4503 rather than run for a
    device that may have given up on its socket; once the gate is free, logins go through."""
    monkeypatch.setattr(limits, "LOGINS_AT_ONCE", 1)
    monkeypatch.setattr(limits, "LOGIN_WAIT_SECONDS", 0.3)
    gate = limits.login_gate()
    await gate.acquire()  # a login that does not finish
    waiting = await open_worker(world.tokens[world.a1.id])
    assert await waiting.closed_with(timeout=3) == protocol.CLOSE_TRY_AGAIN
    gate.release()
    worker = await open_worker(world.tokens[world.a2.id])
    await worker.send(position(seq=1))
    assert (await worker.receive_type("ack", timeout=5))["seq"] == 1


async def test_a_login_while_the_database_is_down_is_told_to_try_again(
    world, open_worker, monkeypatch
):
    """A token that cannot be checked (the database is down) closes the socket 4503, not 1011
    with a traceback; once the database answers again the device gets in."""
    lookup = selectors.worker_get_by_token

    def database_down(*, token):
        raise OperationalError("connection refused")

    monkeypatch.setattr(selectors, "worker_get_by_token", database_down)
    refused = await open_worker(world.tokens[world.a1.id])
    assert await refused.closed_with() == protocol.CLOSE_TRY_AGAIN
    monkeypatch.setattr(selectors, "worker_get_by_token", lookup)
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send(position(seq=1))
    assert (await worker.receive_type("ack", timeout=5))["seq"] == 1


async def test_identity_comes_from_the_token_not_the_frame(world, open_worker, open_manager):
    manager = await open_manager("bravo", world.cookies["bob"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    # The frame claims to be a worker of team bravo; the token says alpha's Alice.
    await worker.send({**position(), "id": world.b1.id, "team": "bravo", "worker": world.b1.id})
    assert await manager.nothing(0.4)
    await worker.send(position(lat=1.0))


# ---------------------------------------------------------------- bad frames


BAD_FRAMES = {
    "invalid_json": "{not json",
    "not_finite": '{"lat": NaN, "lng": 2.0, "ts": 1700000000}',
    "not_finite_infinity": '{"lat": 41.0, "lng": Infinity, "ts": 1700000000}',
    "not_finite_overflow": '{"lat": 1e999, "lng": 2.0, "ts": 1700000000}',
    "invalid_frame": "[1, 2, 3]",
    "invalid_frame_type": '{"type": "teleport", "lat": 1}',
    "invalid_field": '{"lat": "41.0", "lng": 2.0, "ts": 1700000000}',
    "invalid_field_missing": '{"lat": 41.0, "ts": 1700000000}',
    "invalid_field_bool": '{"lat": true, "lng": 2.0, "ts": 1700000000}',
    "out_of_range_lat": '{"lat": 90.5, "lng": 2.0, "ts": 1700000000}',
    "out_of_range_lng": '{"lat": 41.0, "lng": -180.01, "ts": 1700000000}',
    "invalid_ts": json.dumps(position(ts=time.time() + 3600)),
    "frame_too_large": json.dumps(position(pad="x" * protocol.MAX_FRAME_CHARS)),
    "batch_too_large": json.dumps(
        {"type": "batch", "positions": [position()] * (protocol.MAX_BATCH_POSITIONS + 1)}
    ),
    "invalid_json_deep": "[" * 100_000,
}


@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
async def test_bad_frame_gets_its_error_code_keeps_the_socket_and_relays_nothing(
    world, open_worker, open_manager, kind
):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    await manager.receive_type("presence")
    # Earlier tests' garbage, collected in the middle of the deep frame's parse, would warn from
    # a stack too deep for pytest to report it (CI: RecursionError in its unraisable hook).
    gc.collect()
    await worker.send(BAD_FRAMES[kind])
    error = await worker.receive()
    assert error["type"] == "error"
    assert kind.startswith(error["code"]), error
    assert error["detail"]
    assert await manager.nothing(0.3)
    # The socket stays open and usable.
    await worker.send(position(lat=12.0))
    assert (await manager.receive_type("positions"))["positions"][0]["lat"] == 12.0


async def test_binary_frame_gets_an_error(world, open_worker):
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await worker.receive())["code"] == "binary_frame"


async def test_a_batch_with_one_bad_position_relays_none_of_it(world, open_worker, open_manager):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    await manager.receive_type("presence")
    await worker.send(
        {"type": "batch", "positions": [position(lat=1.0), position(lat=2.0), position(lat=95.0)]}
    )
    error = await worker.receive()
    assert error["code"] == "out_of_range" and "positions[2].lat" in error["detail"]
    assert await manager.nothing(0.3)


async def test_second_auth_frame_is_an_error(world, open_worker):
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send({"type": "auth", "token": world.tokens[world.a1.id]})
    assert (await worker.receive())["code"] == "invalid_frame"


# ---------------------------------------------------------------- batching and conflation


async def test_conflation_keeps_each_workers_latest_position(world, open_worker, open_manager):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    alice = await open_worker(world.tokens[world.a1.id])
    arno = await open_worker(world.tokens[world.a2.id])
    now = time.time()
    for offset in (1, 2, 3):
        await alice.send(position(lat=offset, ts=now + offset))
    await arno.send(
        {"type": "batch", "positions": [position(lat=20, ts=now + 2), position(lat=10, ts=now + 1)]}
    )
    latest, frames = {}, 0
    while latest != {world.a1.id: 3.0, world.a2.id: 20.0}:
        # The sends may straddle a tick; the newest of each worker always arrives.
        frame = await manager.receive_type("positions")
        latest.update({p["id"]: p["lat"] for p in frame["positions"]})
        frames += 1
    assert frames <= 2
    # A late, older position (from a device's offline buffer) does not move the worker back.
    await alice.send(position(lat=-5, ts=now - 60))
    assert await manager.nothing(0.4)


async def test_every_manager_of_the_team_gets_the_same_batch(world, open_worker, open_manager):
    await sync_to_async(services.team_managers_add)(team=world.alpha, users=[world.bob])
    ann = await open_manager("alpha", world.cookies["ann"])
    bob = await open_manager("alpha", world.cookies["bob"])
    root = await open_manager("alpha", world.cookies["root"])
    for manager in (ann, bob, root):
        await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send(position(lat=33.0))
    frames = [await m.receive_type("positions") for m in (ann, bob, root)]
    assert frames[0] == frames[1] == frames[2]
    assert frames[0]["positions"][0]["lat"] == 33.0


# ---------------------------------------------------------------- manager socket


async def test_manager_not_logged_in_is_closed_4401(world, open_manager):
    manager = await open_manager("alpha", None)
    assert await manager.closed_with() == protocol.CLOSE_UNAUTHENTICATED


async def test_manager_of_another_team_is_closed_4403(world, open_manager):
    manager = await open_manager("alpha", world.cookies["bob"])
    assert await manager.closed_with() == protocol.CLOSE_FORBIDDEN


async def test_unknown_team_is_closed_4404(world, open_manager):
    manager = await open_manager("nope", world.cookies["ann"])
    assert await manager.closed_with() == protocol.CLOSE_NOT_FOUND


async def test_unknown_socket_path_is_closed_4404(world, open_worker):
    socket = await open_worker(path="/ws/elsewhere/")
    assert await socket.closed_with() == protocol.CLOSE_NOT_FOUND


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://localhost:9999",  # the same host, another port: another site
        "https://localhost",  # the same host, another scheme
        "http://localhost.evil.example",
    ],
)
async def test_manager_socket_from_a_foreign_origin_is_refused(world, open_manager, origin):
    manager = await open_manager("alpha", world.cookies["ann"], origin=(b"origin", origin.encode()))
    assert manager.accepted is False


async def test_a_trusted_origin_may_open_a_manager_socket(world, open_manager, settings):
    """Behind a TLS terminator the site's pages are https:// while nginx says http."""
    settings.CSRF_TRUSTED_ORIGINS = ["https://track.example.com"]
    origin = (b"origin", b"https://track.example.com")
    manager = await open_manager("alpha", world.cookies["ann"], origin=origin)
    assert (await manager.receive_type("snapshot"))["team"] == "alpha"


async def test_superuser_may_watch_any_team(world, open_manager):
    manager = await open_manager("bravo", world.cookies["root"])
    snapshot = await manager.receive_type("snapshot")
    assert snapshot["team"] == "bravo"


async def test_frames_on_the_manager_socket_get_an_error(world, open_manager):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    await manager.send({"type": "positions", "positions": []})
    assert (await manager.receive())["code"] == "invalid_frame"


async def test_snapshot_lists_every_active_worker_with_last_position_and_presence(
    world, open_worker, open_manager
):
    first = await open_manager("alpha", world.cookies["ann"])
    empty = await first.receive_type("snapshot")
    assert empty == {
        "type": "snapshot",
        "team": "alpha",
        "workers": [
            {
                "id": world.a1.id,
                "name": "Alice",
                "lat": None,
                "lng": None,
                "ts": None,
                "online": False,
            },
            {
                "id": world.a2.id,
                "name": "Arno",
                "lat": None,
                "lng": None,
                "ts": None,
                "online": False,
            },
        ],
    }
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send(position(lat=41.4, lng=2.17, ts=1_700_000_001.0, speed=3.5))
    await first.receive_type("positions")
    second = await open_manager("alpha", world.cookies["ann"])
    snapshot = await second.receive_type("snapshot")
    assert snapshot["workers"][0] == {
        "id": world.a1.id,
        "name": "Alice",
        "lat": 41.4,
        "lng": 2.17,
        "ts": 1_700_000_001.0,
        "speed": 3.5,
        "online": True,
    }
    assert snapshot["workers"][1]["online"] is False


async def test_presence_on_connect_and_disconnect(world, open_worker, open_manager):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a2.id])
    assert await manager.receive() == {
        "type": "presence",
        "id": world.a2.id,
        "name": "Arno",
        "online": True,
    }
    # A second socket of the same device (a reconnect racing the old one) takes over: the old
    # one is closed, and the managers see no change.
    again = await open_worker(world.tokens[world.a2.id])
    assert await worker.closed_with() == protocol.CLOSE_REPLACED
    assert await manager.nothing(0.3)
    await again.send(position(lat=7.0))
    await again.close()
    # Its last position arrives before it is shown offline.
    assert (await manager.receive())["positions"][0]["lat"] == 7.0
    assert await manager.receive() == {
        "type": "presence",
        "id": world.a2.id,
        "name": "Arno",
        "online": False,
    }


async def test_manager_of_team_a_never_receives_anything_of_team_b(
    world, open_worker, open_manager
):
    ann = await open_manager("alpha", world.cookies["ann"])
    snapshot = await ann.receive_type("snapshot")
    assert {w["id"] for w in snapshot["workers"]} == {world.a1.id, world.a2.id}
    bea = await open_worker(world.tokens[world.b1.id])
    await bea.send(position(lat=55.0))
    await bea.send({"type": "batch", "positions": [position(lat=56.0)]})
    await bea.close()
    assert await ann.nothing(0.5)


# ---------------------------------------------------------------- acks, limits, logout


async def test_a_frame_with_seq_is_acknowledged_once_relayed(world, open_worker, open_manager):
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send(position(lat=1.0, seq=41))
    assert await worker.receive() == {"type": "ack", "seq": 41}
    await manager.receive_type("positions")
    batch = [position(lat=2.0, seq=42, ts=time.time() - 1), position(lat=3.0, seq=43)]
    await worker.send({"type": "batch", "positions": batch})
    assert await worker.receive() == {"type": "ack", "seq": 43}
    await worker.send(position(lat=4.0))  # no seq: nothing to acknowledge
    assert await worker.nothing(0.5)


async def alice_online_on_a_map(world, open_worker, open_manager):
    """Open a map of team alpha, then Alice's socket; return both once the map saw her online."""
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    worker = await open_worker(world.tokens[world.a1.id])
    assert (await manager.receive())["online"] is True
    return manager, worker


async def test_a_flapping_device_sends_its_maps_no_presence_until_it_stays_away(
    world, open_worker, open_manager, settings
):
    settings.TEAMTRACK_OFFLINE_GRACE = 0.5
    manager, worker = await alice_online_on_a_map(world, open_worker, open_manager)
    for _ in range(10):  # a phone between networks, or a client in a reconnect loop
        await worker.close()
        worker = await open_worker(world.tokens[world.a1.id])
    assert await manager.nothing(1.0), "a flapping device blinked on the map"
    await worker.close()
    assert await manager.nothing(0.3)  # within the grace
    offline = await manager.receive(timeout=2)
    assert (offline["type"], offline["id"], offline["online"]) == ("presence", world.a1.id, False)


async def test_only_the_latest_closes_grace_may_take_a_worker_offline(
    world, open_worker, open_manager, settings
):
    settings.TEAMTRACK_OFFLINE_GRACE = 1.0
    manager, worker = await alice_online_on_a_map(world, open_worker, open_manager)
    await worker.close()  # its grace ends at 1.0, while the worker is away again
    await asyncio.sleep(0.3)
    worker = await open_worker(world.tokens[world.a1.id])
    await asyncio.sleep(0.3)
    await worker.close()  # away from 0.6 to 1.3: never as long as the grace
    await asyncio.sleep(0.7)
    worker = await open_worker(world.tokens[world.a1.id])
    assert await manager.nothing(1.5), "the map saw a blink the grace should have hidden"


async def test_a_login_overtaken_by_a_newer_one_of_the_same_worker_is_closed_4409(
    world, open_worker
):
    # Another replica's newer login was heard before this one's socket was registered.
    newer = {"type": control.WORKER_LOGGED_IN, "worker_id": world.a1.id, "seq": 10**18}
    await get_relay().dispatch(newer)
    late = await open_worker(world.tokens[world.a1.id])
    assert await late.closed_with() == protocol.CLOSE_REPLACED
    other = await open_worker(world.tokens[world.a2.id])  # another worker's logins are its own
    await other.send(position(seq=1))
    assert (await other.receive_type("ack"))["seq"] == 1


async def test_a_flooding_device_is_refused_then_closed_4429_and_others_go_on(
    world, open_worker, open_manager, settings
):
    settings.TEAMTRACK_WORKER_FRAMES_PER_SECOND = 1
    settings.TEAMTRACK_WORKER_FRAME_BURST = 3
    manager = await open_manager("alpha", world.cookies["ann"])
    await manager.receive_type("snapshot")
    flooder = await open_worker(world.tokens[world.a1.id])
    calm = await open_worker(world.tokens[world.a2.id])
    for lat in range(4):
        await flooder.send(position(lat=float(lat)))
    error = await flooder.receive()
    assert error["type"] == "error" and error["code"] == "rate_limited"
    # A second socket of the same worker takes over (the first is closed) and goes on with its
    # budget: no way around the limit.
    second = await open_worker(world.tokens[world.a1.id])
    assert await flooder.closed_with() == protocol.CLOSE_REPLACED
    await second.send(position(lat=9.0, seq=1))
    assert await second.nothing(0.5)  # refused (a fresh budget would acknowledge it)
    closes_before = (
        REGISTRY.get_sample_value("teamtrack_rate_limited_closes_total", {"reason": "frames"}) or 0
    )
    for lat in range(10):  # frames already on their way when it is closed are ignored
        await second.send(position(lat=float(lat)))
    assert await second.closed_with() == protocol.CLOSE_RATE_LIMITED
    closes = REGISTRY.get_sample_value("teamtrack_rate_limited_closes_total", {"reason": "frames"})
    assert closes - closes_before == 1
    await calm.send(position(lat=50.0))
    frame = await manager.receive_type("positions")
    while world.a2.id not in {p["id"] for p in frame["positions"]}:
        frame = await manager.receive_type("positions")
    assert {p["id"]: p["lat"] for p in frame["positions"]}[world.a2.id] == 50.0


async def test_an_address_that_fails_logins_is_told_to_wait_4429_but_good_tokens_get_in(
    world, open_worker, settings
):
    settings.TEAMTRACK_FAILED_LOGINS_PER_MINUTE = 3
    for attempt in range(3):
        worker = await open_worker(f"tt_wrong-{attempt}")
        assert await worker.closed_with() == protocol.CLOSE_UNAUTHENTICATED
    worker = await open_worker("tt_wrong-3")
    assert await worker.closed_with() == protocol.CLOSE_RATE_LIMITED
    # A good token still gets in: carriers' NAT puts many phones behind one address.
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send(position(seq=1))
    assert (await worker.receive_type("ack"))["seq"] == 1


async def test_a_worker_that_logs_in_too_often_is_refused_4429(world, open_worker, settings):
    settings.TEAMTRACK_WORKER_LOGINS_PER_MINUTE = 3
    for _ in range(3):
        worker = await open_worker(world.tokens[world.a1.id])
        await worker.close()
    worker = await open_worker(world.tokens[world.a1.id])
    assert await worker.closed_with() == protocol.CLOSE_RATE_LIMITED
    other = await open_worker(world.tokens[world.a2.id])  # another worker's logins are its own
    await other.send(position(seq=1))
    assert (await other.receive_type("ack"))["seq"] == 1


async def test_logging_out_closes_the_users_manager_sockets(world, open_manager):
    ann_tab = await open_manager("alpha", world.cookies["ann"])
    await ann_tab.receive_type("snapshot")
    root_tab = await open_manager("alpha", world.cookies["root"])
    await root_tab.receive_type("snapshot")
    browser = Client()
    browser.cookies["sessionid"] = world.cookies["ann"]
    response = await sync_to_async(browser.post)("/accounts/logout/")
    assert response.status_code == 302
    assert await ann_tab.closed_with() == protocol.CLOSE_UNAUTHENTICATED
    assert await root_tab.nothing(0.5)


async def test_a_manager_taken_off_the_team_has_its_map_closed_4403(world, open_manager):
    ann_tab = await open_manager("alpha", world.cookies["ann"])
    await ann_tab.receive_type("snapshot")
    root_tab = await open_manager("alpha", world.cookies["root"])
    await root_tab.receive_type("snapshot")
    await sync_to_async(world.alpha.managers.remove)(world.ann)
    assert await ann_tab.closed_with() == protocol.CLOSE_FORBIDDEN
    # A superuser taken off the managers may still watch every team.
    await sync_to_async(world.alpha.managers.add)(world.root)
    await sync_to_async(world.root.managed_teams.clear)()
    assert await root_tab.nothing(0.5)


async def test_a_deactivated_manager_has_every_map_closed_4401(world, open_manager):
    ann_tab = await open_manager("alpha", world.cookies["ann"])
    await ann_tab.receive_type("snapshot")
    world.ann.is_active = False
    await sync_to_async(world.ann.save)()
    assert await ann_tab.closed_with() == protocol.CLOSE_UNAUTHENTICATED


async def test_a_password_change_closes_the_users_maps(world, open_manager):
    ann_tab = await open_manager("alpha", world.cookies["ann"])
    await ann_tab.receive_type("snapshot")
    await sync_to_async(world.ann.save)(update_fields=["last_login"])
    assert await ann_tab.nothing(0.3), "a save without a new password closed the map"
    world.ann.set_password("a-new-password-456")
    await sync_to_async(world.ann.save)()
    assert await ann_tab.closed_with() == protocol.CLOSE_UNAUTHENTICATED


@pytest.mark.parametrize("how", ["team", "queryset"])
async def test_a_worker_deleted_any_way_has_its_sockets_closed(world, open_worker, how):
    """Not only through the worker_delete service: a team's deletion cascading, or a queryset
    deleted in a shell or a data migration."""
    worker = await open_worker(world.tokens[world.a1.id])
    await worker.send(position(seq=1))
    assert (await worker.receive_type("ack"))["seq"] == 1
    if how == "team":
        await sync_to_async(world.alpha.delete)()
    else:
        await sync_to_async(lambda: Worker.objects.filter(pk=world.a1.pk).delete())()
    assert await worker.closed_with() == protocol.CLOSE_UNAUTHENTICATED
