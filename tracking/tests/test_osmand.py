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


# Requests as clients in the field send them (the shapes traccar/traccar's decoder tests use).
REAL_QUERIES = [
    "id=902064&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z&hdop=6.0"
    "&altitude=224.0&speed=0.0",
    "id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579&hdop=6.0&altitude=224.0&speed=0.0",
    "lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&altitude=384.7&speed=0.0"
    "&id=353861053849681",
    "id=123456&timestamp=1377177267&lat=60.0&lon=30.0&speed=0.0&bearing=0.0&altitude=0&hdop=0.0",
    "lat=60.0&lon=30.0&speed=0.0&heading=0.0&vacc=0&hacc=0&altitude=0&deviceid=123456",
    "id=861001000719969&lat=41.666667&lon=-0.883333&altitude=350.059479&speed=0.000000&batt=87",
    "id=123456&timestamp=1377177267&location=60.0,30.0",
    "id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571"
    "&bearing=7.19889788244&speed=40&ignition=true&rpm=933&fuel=24",
]


@pytest.mark.parametrize("query", REAL_QUERIES)
def test_requests_from_the_field_are_taken(query):
    upload = parse(query)
    assert upload.device_id.isdigit()
    assert -90 <= upload.position["lat"] <= 90 and upload.position["ts"] <= NOW


def test_the_date_with_a_plus_for_its_space_is_read_as_utc():
    upload = parse(REAL_QUERIES[2])
    assert upload.position["ts"] == datetime(2014, 6, 4, 9, 10, 11, tzinfo=UTC).timestamp()
    assert parse(REAL_QUERIES[1]).position["ts"] == 1442068686.579
