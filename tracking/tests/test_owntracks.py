"""OwnTracks' HTTP-mode messages (owntracks/booklet docs/tech/json.md) and our answers."""

import json

import pytest

from tracking import owntracks
from tracking.protocol import ClientError

NOW = 1_764_150_000.0


def parse(message, now=NOW):
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return owntracks.parse(body, now=now)


def test_a_location_becomes_a_position_in_our_units():
    message = parse(
        {
            "_type": "location",
            "lat": 41.39,
            "lon": 2.16,
            "tst": 1764149990,
            "acc": 12,
            "alt": 30,
            "vel": 36,
            "cog": 90,
            "batt": 80,
            "bs": 1,
            "tid": "al",
            "t": "u",
            "conn": "m",
            "topic": "owntracks/alice/phone",
            "inregions": ["office"],
            "created_at": 1764149991,
        }
    )
    assert message.kind == owntracks.LOCATION
    assert message.position == {
        "lat": 41.39,
        "lng": 2.16,
        "ts": 1764149990.0,
        "acc": 12.0,
        "speed": pytest.approx(10.0),  # 36 km/h
        "heading": 90.0,
        "alt": 30.0,
        "batt": 80.0,
    }


def test_unknown_values_sent_as_minus_one_are_left_out():
    message = parse(
        {"_type": "location", "lat": 1, "lon": 2, "tst": 1764149990, "vel": -1, "cog": -1}
    )
    assert set(message.position) == {"lat", "lng", "ts"}


def test_lwt_says_the_phone_stops():
    assert parse({"_type": "lwt", "tst": 1764149990}).kind == owntracks.OFFLINE


@pytest.mark.parametrize(
    "message",
    [
        {"_type": "transition", "event": "enter", "desc": "office", "tst": 1, "wtst": 1},
        {"_type": "waypoint", "desc": "office", "lat": 1, "lon": 2, "rad": 50, "tst": 1},
        {"_type": "waypoints", "waypoints": []},
        {"_type": "card", "name": "Alice"},
        {"_type": "steps", "steps": 10},
        {"no_type": True},
        b"",
        b"  \n",
    ],
    ids=["transition", "waypoint", "waypoints", "card", "unknown", "untyped", "empty", "blank"],
)
def test_other_messages_and_empty_bodies_are_accepted_and_ignored(message):
    assert parse(message) == owntracks.Message(owntracks.IGNORED)


@pytest.mark.parametrize(
    "message, field",
    [
        (b"{", "the body"),
        (b"[1]", "the body"),
        ({"_type": "location", "lon": 2, "tst": 1764149990}, "lat"),
        ({"_type": "location", "lat": 1, "tst": 1764149990}, "lon"),
        ({"_type": "location", "lat": 1, "lon": 2}, "tst"),
        ({"_type": "location", "lat": 100, "lon": 2, "tst": 1764149990}, "lat"),
        ({"_type": "location", "lat": "1", "lon": 2, "tst": 1764149990}, "lat"),
        ({"_type": "location", "lat": 1, "lon": 2, "tst": "x"}, "tst"),
        ({"_type": "location", "lat": 1, "lon": 2, "tst": 1764160000}, "tst"),
        ({"_type": "location", "lat": 1, "lon": 2, "tst": 1764149990, "vel": 5000}, "vel"),
    ],
)
def test_a_bad_location_names_the_field(message, field):
    with pytest.raises(ClientError) as error:
        parse(message)
    assert error.value.detail.startswith(field), error.value.detail


def test_teammates_get_a_card_once_then_locations_only():
    latest = {
        2: {"lat": 41.39, "lng": 2.16, "ts": 1764149990.7, "acc": 5.2, "speed": 2.0, "batt": 55.0},
        3: {"lat": 41.4, "lng": 2.17, "ts": 1764149980.0},
    }
    names = {2: "Arno Smith", 3: "bea", 4: "Never Reported"}
    carded: set[int] = set()
    first = owntracks.teammate_messages("alpha", names, latest, carded=carded)
    assert first == [
        {"_type": "card", "name": "Arno Smith", "tid": "AS", "topic": "owntracks/alpha/2"},
        {
            "_type": "location",
            "lat": 41.39,
            "lon": 2.16,
            "tst": 1764149990,
            "tid": "AS",
            "topic": "owntracks/alpha/2",
            "acc": 5,
            "vel": 7,
            "batt": 55,
        },
        {"_type": "card", "name": "bea", "tid": "B", "topic": "owntracks/alpha/3"},
        {
            "_type": "location",
            "lat": 41.4,
            "lon": 2.17,
            "tst": 1764149980,
            "tid": "B",
            "topic": "owntracks/alpha/3",
        },
    ]
    second = owntracks.teammate_messages("alpha", names, latest, carded=carded)
    assert [m["_type"] for m in second] == ["location", "location"]
