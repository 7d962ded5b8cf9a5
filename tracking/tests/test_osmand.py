"""The OsmAnd protocol's requests as Traccar Client and OsmAnd send them (see
../shared/reference and traccar's OsmAndProtocolDecoderTest for where each shape comes from)."""

import json
from datetime import UTC, datetime

import pytest

from tracking import osmand
from tracking.protocol import ClientError

NOW = 1_764_150_000.0
KNOT = 1852 / 3600


def parse(query="", body=b"", content_type="", now=NOW):
    return osmand.parse(query, body, content_type, now=now)


def test_classic_android_client_sends_everything_in_the_query_string_of_an_empty_post():
    upload = parse(
        "id=tt_abc&timestamp=1764149990&lat=41.3925&lon=2.164&speed=10.0&bearing=270.5"
        "&altitude=12.0&accuracy=0.0&batt=87.0&mock=true"
    )
    assert upload.device_id == "tt_abc"
    assert upload.position == {
        "lat": 41.3925,
        "lng": 2.164,
        "ts": 1764149990.0,
        "acc": 0.0,
        "speed": pytest.approx(10 * KNOT),
        "heading": 270.5,
        "alt": 12.0,
        "batt": 87.0,
    }


def test_a_form_encoded_body_is_read_when_the_query_string_is_empty():
    body = b"id=tt_abc&lat=41.39&lon=2.16&timestamp=1764149990&speed=1&bearing=5&charge=true"
    upload = parse(body=body, content_type="application/x-www-form-urlencoded")
    assert (upload.device_id, upload.position["lat"], upload.position["speed"]) == (
        "tt_abc",
        41.39,
        pytest.approx(KNOT),
    )


def test_the_query_string_wins_over_a_body_as_traccar_reads_them():
    upload = parse("id=tt_query&lat=1&lon=2", body=b"id=tt_body&lat=3&lon=4")
    assert (upload.device_id, upload.position["lat"]) == ("tt_query", 1.0)


def test_deviceid_heading_and_location_are_the_other_spellings():
    upload = parse("deviceid=tt_abc&location=41.5,2.25&heading=90&timestamp=1764149990")
    assert upload.device_id == "tt_abc"
    assert (upload.position["lat"], upload.position["lng"], upload.position["heading"]) == (
        41.5,
        2.25,
        90.0,
    )


@pytest.mark.parametrize(
    "timestamp, expected",
    [
        ("1764149990", 1764149990.0),
        ("1764149990123", 1764149990.123),
        ("2025-11-26T09:39:50Z", 1764149990.0),
        ("2025-11-26T09:39:50.500Z", 1764149990.5),
        ("2025-11-26T11:39:50%2B02:00", 1764149990.0),  # + encoded, as clients send it
        ("2025-11-26 09:39:50", 1764149990.0),
        ("2025-11-26%2009:39:50", 1764149990.0),
    ],
    ids=["seconds", "milliseconds", "iso-z", "iso-fraction", "iso-offset", "space", "encoded"],
)
def test_every_timestamp_form(timestamp, expected):
    upload = parse(f"id=tt_abc&lat=1&lon=2&timestamp={timestamp}")
    assert upload.position["ts"] == pytest.approx(expected)


def test_no_timestamp_means_now():
    assert parse("id=tt_abc&lat=1&lon=2").position["ts"] == NOW


def test_unknown_parameters_are_ignored():
    upload = parse("id=tt_abc&lat=1&lon=2&hdop=0.9&cell=1,2,3,4&wifi=x&driverUniqueId=7&valid=1")
    assert set(upload.position) == {"lat", "lng", "ts"}


def test_traccar_client_9_json_body():
    body = {
        "device_id": "tt_abc",
        "location": {
            "timestamp": "2025-11-26T09:39:50.250Z",
            "coords": {
                "latitude": 41.39,
                "longitude": 2.16,
                "accuracy": 4.5,
                "speed": 3.2,
                "heading": 181.0,
                "altitude": 30.5,
            },
            "is_moving": True,
            "odometer": 1200,
            "event": "motionchange",
            "battery": {"level": 0.62, "is_charging": False},
            "activity": {"type": "walking"},
            "extras": {},
        },
    }
    upload = parse(body=json.dumps(body).encode(), content_type="application/json; charset=utf-8")
    assert upload.device_id == "tt_abc"
    assert upload.position == {
        "lat": 41.39,
        "lng": 2.16,
        "ts": 1764149990.25,
        "acc": 4.5,
        "speed": 3.2,  # already m/s in this shape
        "heading": 181.0,
        "alt": 30.5,
        "batt": pytest.approx(62.0),
    }


def test_json_unknowns_reported_as_minus_one_are_left_out():
    body = {
        "device_id": "tt_abc",
        "location": {
            "timestamp": "2025-11-26T09:39:50Z",
            "coords": {"latitude": 1, "longitude": 2, "speed": -1, "heading": -1},
            "battery": {"level": -1},
        },
    }
    upload = parse(body=json.dumps(body).encode(), content_type="application/json")
    assert set(upload.position) == {"lat", "lng", "ts"}


@pytest.mark.parametrize(
    "query, field",
    [
        ("lat=1&lon=2", "id"),
        ("id=tt_abc&lon=2", "lat"),
        ("id=tt_abc&lat=1", "lon"),
        ("id=tt_abc&lat=91&lon=2", "lat"),
        ("id=tt_abc&lat=1&lon=-181", "lon"),
        ("id=tt_abc&lat=north&lon=2", "lat"),
        ("id=tt_abc&lat=nan&lon=2", "lat"),
        ("id=tt_abc&lat=1&lon=2&timestamp=yesterday", "timestamp"),
        ("id=tt_abc&lat=1&lon=2&timestamp=2025-13-45T99:00:00", "timestamp"),
        (f"id=tt_abc&lat=1&lon=2&timestamp={int(NOW) + 3600}", "timestamp"),
        ("id=tt_abc&lat=1&lon=2&speed=fast", "speed"),
        ("id=tt_abc&lat=1&lon=2&bearing=400", "bearing"),
        ("id=tt_abc&lat=1&lon=2&batt=150", "batt"),
        ("id=tt_abc&location=1", "lon"),
    ],
)
def test_bad_input_names_the_field(query, field):
    with pytest.raises(ClientError) as error:
        parse(query)
    assert error.value.detail.startswith(field), error.value.detail


@pytest.mark.parametrize(
    "body, field",
    [
        (b"{", "the body"),
        (b"[]", "the body"),
        (b'{"location": {}}', "device_id"),
        (b'{"device_id": "tt_abc"}', "location"),
        (b'{"device_id": "tt_abc", "location": {"coords": {"latitude": 1}}}', "location.coords"),
        (b'{"device_id": "tt_abc", "location": {"timestamp": "2025-11-26T09:39:50Z"}}', "loc"),
        (
            b'{"device_id": "tt_abc", "location": {"timestamp": "x", '
            b'"coords": {"latitude": 1, "longitude": 2}}}',
            "location.timestamp",
        ),
        (
            b'{"device_id": "tt_abc", "location": {"coords": {"latitude": NaN, "longitude": 2}}}',
            "NaN",
        ),
    ],
)
def test_bad_json_names_what_is_wrong(body, field):
    with pytest.raises(ClientError) as error:
        parse(body=body, content_type="application/json")
    assert error.value.detail.startswith(field), error.value.detail


def test_an_oversized_request_is_refused():
    with pytest.raises(ClientError):
        parse(body=b"id=tt_abc&lat=1&lon=2&x=" + b"a" * osmand.MAX_BODY_BYTES)


def test_iso_without_offset_is_utc():
    expected = datetime(2025, 11, 26, 9, 39, 50, tzinfo=UTC).timestamp()
    assert osmand.parse_timestamp("2025-11-26T09:39:50", NOW) == expected
