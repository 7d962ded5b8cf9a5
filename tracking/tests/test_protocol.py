"""Frame parsing and encoding, without sockets."""

import json

import pytest

from tracking import protocol
from tracking.protocol import AuthFrame, ClientError, PositionsFrame, parse_worker_frame

NOW = 1_800_000_000.0


def parse(frame) -> object:
    return parse_worker_frame(json.dumps(frame) if not isinstance(frame, str) else frame, now=NOW)


def error_of(frame) -> ClientError:
    with pytest.raises(ClientError) as caught:
        parse(frame)
    return caught.value


def test_a_position_frame_keeps_known_fields_as_floats_and_drops_the_rest():
    frame = parse(
        {"lat": 41, "lng": 2.5, "ts": NOW, "acc": 3, "speed": 1.5, "heading": 90, "seq": 4, "x": 1}
    )
    assert frame == PositionsFrame(
        [{"lat": 41.0, "lng": 2.5, "ts": NOW, "acc": 3.0, "speed": 1.5, "heading": 90.0, "seq": 4}]
    )
    assert type(frame.positions[0]["lat"]) is float


def test_a_batch_and_an_auth_frame():
    batch = parse(
        {"type": "batch", "positions": [{"lat": 1, "lng": 2, "ts": NOW - i} for i in range(3)]}
    )
    assert [p["ts"] for p in batch.positions] == [NOW, NOW - 1, NOW - 2]
    assert parse({"type": "auth", "token": "tt_abc"}) == AuthFrame("tt_abc")


@pytest.mark.parametrize(
    ("frame", "code", "names"),
    [
        ({"lat": 90.000001, "lng": 0, "ts": NOW}, "out_of_range", "lat"),
        ({"lat": -90.5, "lng": 0, "ts": NOW}, "out_of_range", "lat"),
        ({"lat": 0, "lng": 180.5, "ts": NOW}, "out_of_range", "lng"),
        ({"lat": 0, "lng": 0, "ts": -1}, "out_of_range", "ts"),
        ({"lat": 0, "lng": 0, "ts": NOW, "heading": 361}, "out_of_range", "heading"),
        ({"lat": 0, "lng": 0, "ts": NOW, "acc": -1}, "out_of_range", "acc"),
        ({"lat": 0, "lng": 0, "ts": NOW, "seq": -1}, "out_of_range", "seq"),
        ({"lat": 0, "lng": 0, "ts": NOW + protocol.max_clock_ahead() + 1}, "invalid_ts", "ts"),
        ({"lat": 0, "lng": 0}, "invalid_field", "ts"),
        ({"lat": [1], "lng": 0, "ts": NOW}, "invalid_field", "lat"),
        ({"lat": 0, "lng": None, "ts": NOW}, "invalid_field", "lng"),
        ({"lat": 0, "lng": 0, "ts": NOW, "seq": 1.5}, "invalid_field", "seq"),
        ({"lat": 0, "lng": 0, "ts": NOW, "seq": True}, "invalid_field", "seq"),
        ({"lat": 0, "lng": 10**400, "ts": NOW}, "not_finite", "lng"),
        ({"type": "batch", "positions": {"lat": 0}}, "invalid_field", "positions"),
        ({"type": "batch", "positions": [1]}, "invalid_frame", "positions[0]"),
        ({"type": "auth", "token": 5}, "invalid_field", "token"),
        ({"type": "auth"}, "invalid_field", "token"),
        ({"type": None, "lat": 0, "lng": 0, "ts": NOW}, "invalid_frame", "type"),
        ('"just a string"', "invalid_frame", "object"),
        ('{"lat": -Infinity, "lng": 0, "ts": 1}', "not_finite", "Infinity"),
        ('{"lat": 1, "lng": 0, "ts": 1', "invalid_json", "JSON"),
        ("1" * 5000, "invalid_json", "JSON"),
    ],
)
def test_each_bad_frame_names_its_code_and_the_field(frame, code, names):
    error = error_of(frame)
    assert error.code == code
    assert names in error.detail


def test_a_position_exactly_on_the_limits_is_accepted():
    frame = parse({"lat": -90, "lng": 180, "ts": NOW + protocol.max_clock_ahead(), "heading": 360})
    assert frame.positions[0]["lat"] == -90.0


def test_binary_and_oversized_frames():
    with pytest.raises(ClientError) as caught:
        parse_worker_frame(None, b"{}")
    assert caught.value.code == "binary_frame"
    assert error_of(" " * (protocol.MAX_FRAME_CHARS + 1)).code == "frame_too_large"


def test_encoders_write_compact_json_a_browser_can_parse():
    assert protocol.encode_presence(3, "Ann", True) == (
        '{"type":"presence","id":3,"name":"Ann","online":true}'
    )
    assert json.loads(protocol.encode_error("invalid_json", "bad")) == {
        "type": "error",
        "code": "invalid_json",
        "detail": "bad",
    }
    # Validation lets no NaN in; were one to slip through, the frame stays strict JSON (the
    # map skips a worker whose lat is null) instead of a NaN that JSON.parse refuses whole.
    text = protocol.encode_positions([{"id": 1, "lat": float("nan")}])
    assert json.loads(text, parse_constant=lambda name: pytest.fail(name)) == {
        "type": "positions",
        "positions": [{"id": 1, "lat": None}],
    }


def test_feed_position_drops_the_device_sequence_number():
    assert protocol.feed_position(9, {"lat": 1.0, "lng": 2.0, "ts": 3.0, "seq": 4}) == {
        "id": 9,
        "lat": 1.0,
        "lng": 2.0,
        "ts": 3.0,
    }


def test_a_clock_ahead_by_more_than_the_allowed_skew_is_refused(settings):
    """A position 290 s ahead used to be taken, and froze its worker on the map: every real
    position after it was older, acknowledged but never shown."""
    settings.TEAMTRACK_MAX_CLOCK_SKEW = 30.0
    assert parse({"lat": 1, "lng": 1, "ts": NOW + 29}).positions[0]["ts"] == NOW + 29
    for ahead in (31, 290):
        with pytest.raises(ClientError) as error:
            parse({"lat": 1, "lng": 1, "ts": NOW + ahead})
        assert error.value.code == "invalid_ts"
        assert error.value.detail == "ts is more than 30 s ahead of the server clock"
    settings.TEAMTRACK_MAX_CLOCK_SKEW = 300.0
    assert parse({"lat": 1, "lng": 1, "ts": NOW + 290}).positions[0]["ts"] == NOW + 290
