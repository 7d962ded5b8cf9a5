"""Fuzz tests of the device frame parser: any input is a frame or a ClientError, never a crash.

Every accepted position must hold only finite numbers inside the ranges docs/protocol.md
documents, so nothing a device sends can put NaN, a huge number or a far-future time on a map.
The ranges are written out here, from the documentation, rather than read from the module.
"""

import json
import math
import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from teams.tokens import token_hash
from tracking import protocol
from tracking.protocol import AuthFrame, ClientError, PositionsFrame, parse_worker_frame

NOW = 1_764_150_000.0

# docs/protocol.md, "Position frame" and "Error frame".
DOCUMENTED_RANGES = {
    "lat": (-90.0, 90.0),
    "lng": (-180.0, 180.0),
    "acc": (0.0, 100_000.0),
    "speed": (0.0, 1_000.0),
    "heading": (0.0, 360.0),
}
REQUIRED = ("lat", "lng", "ts")
MAX_CLOCK_AHEAD = 30.0  # MAX_CLOCK_SKEW_SECONDS, by default
MAX_SEQ = 2**63 - 1
MAX_BATCH = 500
ERROR_CODES = {
    "binary_frame",
    "frame_too_large",
    "invalid_json",
    "not_finite",
    "invalid_frame",
    "invalid_field",
    "out_of_range",
    "invalid_ts",
    "batch_too_large",
}

# The parser is fast; a few hundred examples per property keep the file at a few seconds.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(text, bytes_data=None, now=NOW):
    """Parse; assert the outcome is a well-formed frame or a documented ClientError. Return it."""
    try:
        frame = parse_worker_frame(text, bytes_data, now=now)
    except ClientError as error:
        assert error.code in ERROR_CODES, error
        assert isinstance(error.detail, str) and error.detail
        return error
    if isinstance(frame, AuthFrame):
        assert type(frame.token) is str and frame.token
        token_hash(frame.token)  # the consumer looks every accepted token up by its hash
        return frame
    assert isinstance(frame, PositionsFrame), frame
    assert len(frame.positions) <= MAX_BATCH
    for position in frame.positions:
        check_position(position, now)
    return frame


def check_position(position: dict, now: float) -> None:
    assert set(REQUIRED) <= set(position) <= {*REQUIRED, *DOCUMENTED_RANGES, "seq"}, position
    for name, value in position.items():
        if name == "seq":
            assert type(value) is int and 0 <= value <= MAX_SEQ, position
            continue
        assert type(value) is float and math.isfinite(value), position
        if name == "ts":
            assert 0.0 < value <= now + MAX_CLOCK_AHEAD, position
        else:
            lowest, highest = DOCUMENTED_RANGES[name]
            assert lowest <= value <= highest, position


# ---------------------------------------------------------------- strategies

HUGE_INTS = st.sampled_from(
    [2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**1023, 2**1024, 10**308, 10**309, 10**400]
).flatmap(lambda n: st.sampled_from([n, -n]))
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308]
)
# json.dumps writes a lone surrogate as an escape, as a hostile client may.
STRINGS = st.text(max_size=12) | st.sampled_from(["\ud800", "\udfff", "x\ud83d", "", "\x00"])
SCALARS = st.none() | st.booleans() | st.integers() | HUGE_INTS | FLOATS | STRINGS
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            STRINGS | st.sampled_from(["lat", "lng", "ts", "type"]), children, max_size=4
        )
    ),
    max_leaves=25,
)


def in_range(name: str):
    lowest, highest = DOCUMENTED_RANGES[name]
    return st.floats(lowest, highest) | st.integers(math.ceil(lowest), math.floor(highest))


VALID_FIELDS = {
    "lat": in_range("lat"),
    "lng": in_range("lng"),
    "ts": st.floats(1.0, NOW + MAX_CLOCK_AHEAD) | st.integers(1, int(NOW)),
    "acc": in_range("acc"),
    "speed": in_range("speed"),
    "heading": in_range("heading"),
    "seq": st.integers(0, MAX_SEQ),
}
# Just inside and just outside every documented bound.
EDGES = st.sampled_from(
    sorted(
        {
            edge
            for bound in [*(b for r in DOCUMENTED_RANGES.values() for b in r), 0.0, MAX_SEQ]
            for edge in (
                bound,
                math.nextafter(bound, -math.inf),
                math.nextafter(bound, math.inf),
                bound - 0.5,
                bound + 0.5,
            )
        }
    )
) | st.sampled_from([MAX_SEQ, MAX_SEQ + 1, -1, NOW + MAX_CLOCK_AHEAD, NOW + MAX_CLOCK_AHEAD + 1])
# Anything a field may be mutated into: wrong types, edges, out of range, non-finite, huge.
MUTANTS = (
    SCALARS
    | EDGES
    | EDGES
    | st.floats(-1e6, 1e6)
    | st.floats(NOW, NOW + 2 * MAX_CLOCK_AHEAD)
    | st.integers(-(2**64), 2**64)
    | st.lists(SCALARS, max_size=2)
    | st.dictionaries(STRINGS, SCALARS, max_size=2)
)
ABSENT = object()


@st.composite
def position_like(draw) -> dict:
    """A valid position, then some of its fields mutated, dropped or added to."""
    position = {}
    for name, values in VALID_FIELDS.items():
        if name in REQUIRED or draw(st.booleans()):
            position[name] = draw(values)
    for name in draw(st.lists(st.sampled_from([*VALID_FIELDS, "type", "id", "x"]), max_size=3)):
        mutant = draw(st.just(ABSENT) | MUTANTS)
        if mutant is ABSENT:
            position.pop(name, None)
        else:
            position[name] = mutant
    return position


def contains_non_finite(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(contains_non_finite(item) for item in value)
    if isinstance(value, dict):
        return any(contains_non_finite(item) for item in value.values())
    return False


def as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf


def violations(item, now: float) -> tuple[set[str], set[str]]:
    """The error codes docs/protocol.md gives for this position: those it must get, and those it
    may get where the documentation leaves the parser a choice. None at all: it must be accepted.
    """
    if type(item) is not dict:
        return {"invalid_frame"}, set()
    must, may = set(), set()
    for name in ("lat", "lng", "ts", "acc", "speed", "heading"):
        value = item.get(name)
        if value is None:
            if name in REQUIRED:
                must.add("invalid_field")
        elif type(value) not in (int, float):
            must.add("invalid_field")
        elif not math.isfinite(as_float(value)):
            must.add("not_finite")
        elif name == "ts":
            if value <= 0:  # documented: ts > 0
                must.add("out_of_range")
            elif value < 1:  # the parser refuses ts below 1 s (1970-01-01T00:00:01)
                may.add("out_of_range")
            elif value > now + MAX_CLOCK_AHEAD:
                must.add("invalid_ts")
        elif not DOCUMENTED_RANGES[name][0] <= value <= DOCUMENTED_RANGES[name][1]:
            must.add("out_of_range")
    seq = item.get("seq")
    if seq is not None:
        if type(seq) is not int:
            must.add("invalid_field")
        elif not 0 <= seq <= MAX_SEQ:
            must.add("out_of_range")
    return must, may


def bad(item, now: float = NOW) -> bool:
    """Whether the documentation says this position must be refused."""
    return bool(violations(item, now)[0])


def expect(document, now: float = NOW) -> tuple[set[str], set[str]]:
    """The error codes a frame must get, and those it may get (none: it must be accepted)."""
    if contains_non_finite(document):
        return {"not_finite"}, set()  # NaN and Infinity literals are refused wherever they are
    if type(document) is not dict:
        return {"invalid_frame"}, set()
    frame_type = document.get("type", "position")
    if frame_type == "position":
        return violations(document, now)
    if frame_type == "batch":
        positions = document.get("positions")
        if type(positions) is not list:
            return {"invalid_field"}, set()
        if len(positions) > MAX_BATCH:
            return {"batch_too_large"}, set()
        must, may = set(), set()
        for item in positions:
            item_must, item_may = violations(item, now)
            must |= item_must
            may |= item_may
        return must, may
    if frame_type == "auth":
        token = document.get("token")
        if type(token) is not str or not token:
            return {"invalid_field"}, set()
        if token.isascii() and len(token) <= 256:
            return set(), set()
        # Tokens are tt_ and URL-safe base64: the parser may refuse anything else.
        return set(), {"invalid_field"}
    return {"invalid_frame"}, set()


def assert_outcome(document, now: float = NOW):
    """Send the document as JSON text (NaN and Infinity as literals); check it against expect()."""
    text = json.dumps(document)
    if len(text) > protocol.MAX_FRAME_CHARS:
        return
    outcome = check(text, now=now)
    must, may = expect(document, now)
    if isinstance(outcome, ClientError):
        assert outcome.code in must | may, (outcome, must, may, text[:500])
        assert must or may, (outcome, text[:500])
    else:
        assert not must, (outcome, must, text[:500])
    return outcome


# ---------------------------------------------------------------- properties


@FUZZ
@given(st.text())
@example("")
@example("[" * 100_000)
@example("{" * 100_000)
@example('{"lat": 1, "lng": 1, "ts": 1, "x": ' + "[" * 60_000 + "]" * 60_000 + "}")
@example('{"lat": NaN, "lng": Infinity, "ts": -Infinity}')
@example('{"lat": 1e400, "lng": 1, "ts": 1}')
@example('{"lat": -1e999, "lng": 1, "ts": 1}')
@example('{"lat": 1e-400, "lng": 1, "ts": 1}')
@example('{"lat": ' + "9" * 400 + ', "lng": 1, "ts": 1}')
@example('{"lat": ' + "9" * 5000 + ', "lng": 1, "ts": 1}')
@example('{"lat": 1, "lng": 1, "ts": 1, "seq": ' + "9" * 4000 + "}")
@example('{"type": "auth", "token": "\\ud800"}')
@example('{"lat": 1, "lng": 1, "ts": 1}{')
@example('\ufeff{"lat": 1, "lng": 1, "ts": 1}')
def test_any_text_is_a_frame_or_a_client_error(text):
    check(text)


JSON_TOKENS = st.sampled_from(
    ['{', '}', '[', ']', ',', ':', '"', '"lat"', '"lng"', '"ts"', '"seq"', '"type"', '"batch"',
     '"auth"', '"token"', '"positions"', '"position"', '1', '-0', '1e400', '-1e400', '1e-400',
     '1.5', '2e9', 'NaN', 'Infinity', '-Infinity', 'true', 'false', 'null', ' ', '\\u0000',
     '"\\ud800"', "9" * 310]
)  # fmt: skip


@FUZZ
@given(st.lists(JSON_TOKENS, max_size=40).map("".join))
@example('{"lat": 1, "lng": 2, "ts": 3, "seq": -0}')
@example('{"type": "batch", "positions": [{"lat": 1e400, "lng": 2, "ts": 3}]}')
def test_json_shaped_text_is_a_frame_or_a_client_error(text):
    check(text)


@FUZZ
@given(JSON_VALUES)
def test_any_json_document_is_a_frame_or_a_client_error(document):
    assert_outcome(document)


@FUZZ
@given(position_like(), st.floats(1e9, 4e9))
@example({"lat": 90, "lng": -180, "ts": NOW + MAX_CLOCK_AHEAD, "heading": 360, "seq": MAX_SEQ}, NOW)
@example({"lat": 1, "lng": 1, "ts": math.nextafter(NOW + MAX_CLOCK_AHEAD, math.inf)}, NOW)
@example({"lat": 1, "lng": 1, "ts": 1, "seq": MAX_SEQ + 1}, NOW)
@example({"lat": 1, "lng": 1, "ts": 1, "seq": True}, NOW)
@example({"lat": 1, "lng": 1, "ts": 1, "speed": False}, NOW)
@example({"lat": 10**309, "lng": 1, "ts": 1}, NOW)
@example({"lat": math.nan, "lng": 1, "ts": 1}, NOW)
@example({"lat": 1, "lng": None, "ts": 1}, NOW)
def test_position_with_mutated_fields_is_accepted_exactly_when_valid(position, now):
    outcome = assert_outcome(position, now)
    if isinstance(outcome, PositionsFrame):
        (accepted,) = outcome.positions
        for name, value in accepted.items():
            assert value == position[name]  # the same number, as a float (seq as an int)


@FUZZ
@given(st.lists(position_like(), max_size=12), st.booleans())
def test_batch_is_all_or_nothing(positions, top_level_position):
    document = {"type": "batch", "positions": positions}
    if top_level_position:  # ignored in a batch
        document.update(lat=1000, lng="x", ts=-1)
    outcome = assert_outcome(document)
    if isinstance(outcome, PositionsFrame):
        assert len(outcome.positions) == len(positions)
    elif outcome is not None and not contains_non_finite(document):
        # The error names the first bad entry: positions[i].field, or positions[i] itself.
        named = int(re.search(r"positions\[(\d+)\]", outcome.detail).group(1))
        assert any(violations(positions[named], NOW)), outcome
        assert not any(bad(item) for item in positions[:named]), outcome


@FEW
@given(st.integers(0, MAX_BATCH - 1), position_like().filter(bad))
def test_one_bad_position_in_a_full_batch_refuses_the_batch_and_names_it(index, bad):
    positions = [{"lat": 41.39, "lng": 2.16, "ts": NOW - i} for i in range(MAX_BATCH)]
    positions[index] = bad
    outcome = assert_outcome({"type": "batch", "positions": positions})
    assert isinstance(outcome, ClientError)
    if not contains_non_finite(bad):
        assert f"positions[{index}]" in outcome.detail


def test_a_full_batch_is_accepted_and_one_more_position_is_refused():
    positions = [{"lat": 41.39, "lng": 2.16, "ts": NOW - i, "seq": i} for i in range(MAX_BATCH)]
    accepted = assert_outcome({"type": "batch", "positions": positions})
    assert isinstance(accepted, PositionsFrame) and len(accepted.positions) == MAX_BATCH
    refused = check(json.dumps({"type": "batch", "positions": [*positions, positions[0]]}))
    assert isinstance(refused, ClientError) and refused.code == "batch_too_large"


@FEW
@given(st.integers(1, 64_000), st.sampled_from(["list", "object", "mixed"]), st.booleans())
def test_deep_nesting_within_the_size_limit_is_a_frame_or_a_client_error(depth, kind, inside):
    opening, closing = {"list": ("[", "]"), "object": ('{"a":', "}"), "mixed": ('[{"a":', "}]")}[
        kind
    ]
    nested = opening * depth + "1" + closing * depth
    if inside:
        text = '{"lat": 1, "lng": 2, "ts": 3, "extra": ' + nested + "}"
    else:
        text = nested
    outcome = check(text[: protocol.MAX_FRAME_CHARS])
    if depth > 5_000 and len(text) <= protocol.MAX_FRAME_CHARS:
        # Far beyond the parser's recursion limit: refused as JSON, not a RecursionError.
        assert isinstance(outcome, ClientError) and outcome.code == "invalid_json", outcome


@pytest.mark.parametrize("field", sorted(DOCUMENTED_RANGES))
def test_every_documented_bound_is_inclusive_and_the_next_float_is_out_of_range(field):
    for bound, outward in zip(DOCUMENTED_RANGES[field], (-math.inf, math.inf), strict=True):
        inside = assert_outcome({"lat": 1, "lng": 2, "ts": 3, field: bound})
        assert isinstance(inside, PositionsFrame) and inside.positions[0][field] == bound
        outside = assert_outcome(
            {"lat": 1, "lng": 2, "ts": 3, field: math.nextafter(bound, outward)}
        )
        assert isinstance(outside, ClientError) and outside.code == "out_of_range", outside


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1E309", "9" * 400, "-" + "9" * 400])
@pytest.mark.parametrize("field", ["lat", "lng", "ts", "acc", "speed", "heading"])
def test_numbers_too_large_for_a_float_are_not_finite(field, literal):
    fields = {"lat": "1", "lng": "2", "ts": "3", field: literal}
    text = "{" + ", ".join(f'"{name}": {value}' for name, value in fields.items()) + "}"
    outcome = check(text)
    assert isinstance(outcome, ClientError) and outcome.code == "not_finite", outcome
    assert field in outcome.detail


@pytest.mark.parametrize("prefix", ["[", "{", '{"a":', '{"type": "batch", "positions": '])
def test_nesting_deeper_than_the_parser_allows_is_invalid_json(prefix):
    count = (protocol.MAX_FRAME_CHARS - 1) // len(prefix)
    outcome = check(prefix * count)
    assert isinstance(outcome, ClientError) and outcome.code == "invalid_json"


def test_valid_nesting_the_parser_can_take_is_accepted_beside_a_position():
    nested = "[" * 500 + "]" * 500
    outcome = check('{"lat": 1, "lng": 2, "ts": 3, "extra": ' + nested + "}")
    assert outcome == PositionsFrame([{"lat": 1.0, "lng": 2.0, "ts": 3.0}])


@FEW
@given(st.integers(-200, 2_000), st.sampled_from(["x", "é", "\u20ac", "\U0001f600"]))
def test_frames_over_the_limit_are_refused_by_length_before_parsing(excess, pad_char):
    head = '{"lat": 1, "lng": 2, "ts": 3, "pad": "'
    pad = pad_char * (protocol.MAX_FRAME_CHARS - len(head) - 2 + excess)
    text = head + pad + '"}'
    outcome = check(text)
    if len(text) > protocol.MAX_FRAME_CHARS:
        assert isinstance(outcome, ClientError) and outcome.code == "frame_too_large"
    else:
        assert isinstance(outcome, PositionsFrame)


@FUZZ
@given(st.binary(max_size=256))
def test_binary_frames_are_refused(data):
    outcome = check(None, data)
    assert isinstance(outcome, ClientError) and outcome.code == "binary_frame"


@FUZZ
@given(st.floats(1e9, 4e9), st.floats(-1e4, 1e4))
def test_timestamps_are_judged_against_the_given_clock(now, offset):
    outcome = check(json.dumps({"lat": 1, "lng": 2, "ts": now + offset}), now=now)
    if now + offset > now + MAX_CLOCK_AHEAD:
        assert isinstance(outcome, ClientError) and outcome.code == "invalid_ts"
    else:
        assert isinstance(outcome, PositionsFrame)


@FUZZ
@given(JSON_VALUES, STRINGS)
def test_auth_frames_need_a_non_empty_string_token(token, other_type):
    outcome = assert_outcome({"type": "auth", "token": token})
    if isinstance(outcome, AuthFrame):
        assert outcome.token == token
    outcome = check(json.dumps({"type": other_type, "token": "tt_x"}))
    if other_type not in ("position", "batch", "auth"):
        assert isinstance(outcome, ClientError) and outcome.code == "invalid_frame"


@pytest.mark.parametrize("ts", [0, 0.0, -0.0, -5e-324])
def test_a_zero_timestamp_is_refused(ts):
    outcome = check(json.dumps({"lat": 1, "lng": 2, "ts": ts}))
    assert isinstance(outcome, ClientError) and outcome.code == "out_of_range"


@pytest.mark.parametrize("token", ["\ud800", "tt_\udfffabc", "tt_\x00", "tt_é", "tt_" + "a" * 5000])
def test_a_token_that_cannot_be_one_is_refused_or_can_be_looked_up(token):
    # A lone surrogate (sent as the JSON escape \\ud800) once reached token_hash, whose
    # UnicodeEncodeError closed the socket with 1011; check() hashes every accepted token.
    check(json.dumps({"type": "auth", "token": token}))
