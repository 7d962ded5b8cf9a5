"""The wire protocol of both sockets: frame schemas, validation, encoding, error and close codes.

docs/protocol.md documents every frame and code defined here; keep the two in step.
"""

import json
import math
import time
from dataclasses import dataclass

import orjson
from django.conf import settings

# Close codes. 4000-4999 are free for applications; daphne (autobahn) sends no other code but
# 1000, so even "try again later" (1013 in RFC 6455's registry) has one of ours.
CLOSE_TRY_AGAIN = 4503  # relay or database unreachable, or logins backed up: try again later
CLOSE_UNAUTHENTICATED = 4401  # no, unknown, revoked or rotated device token; not logged in
CLOSE_FORBIDDEN = 4403  # logged in, but not a manager of that team
CLOSE_NOT_FOUND = 4404  # no such team, or no such socket path
CLOSE_TOO_SLOW = 4408  # a manager socket that stopped reading while its frames piled up
CLOSE_RATE_LIMITED = 4429  # too many frames or logins, or failed logins from one address
# A newer socket of the same worker logged in, on any replica: this one is closed; do not reconnect.
CLOSE_REPLACED = 4409
CLOSE_SERVICE_RESTART = 4012  # the replica is stopping: reconnect at once (RFC 6455's 1012)

AUTH_TIMEOUT = 5.0  # seconds a device may take to send its auth frame
MAX_FRAME_CHARS = 128 * 1024  # a full batch of 500 positions takes about 50 KiB
MAX_BATCH_POSITIONS = 500
MAX_SEQ = 2**63 - 1

# Numeric position fields: name, required, lowest and highest allowed value.
# The upper bound of ts is checked against the server clock (max_clock_ahead()).
POSITION_FIELDS = (
    ("lat", True, -90.0, 90.0),
    ("lng", True, -180.0, 180.0),
    ("ts", True, 1.0, math.inf),
    ("acc", False, 0.0, 100_000.0),
    ("speed", False, 0.0, 1_000.0),
    ("heading", False, 0.0, 360.0),
    ("alt", False, -1_000.0, 100_000.0),
    ("batt", False, 0.0, 100.0),
)


def max_clock_ahead() -> float:
    """Seconds a device's clock may run fast (MAX_CLOCK_SKEW_SECONDS). A position from further
    ahead would freeze its worker on the map: every real one after it is older, so acknowledged
    but never shown, until the real clock catches up."""
    return settings.TEAMTRACK_MAX_CLOCK_SKEW


class ClientError(Exception):
    """A frame the client got wrong; becomes one error frame, and the socket stays open."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class AuthFrame:
    token: str


@dataclass(frozen=True)
class PositionsFrame:
    # Validated positions: dicts of floats keyed like POSITION_FIELDS, plus an int "seq" if sent.
    positions: list[dict]

    @property
    def ack_seq(self) -> int | None:
        """The seq to acknowledge the frame with: the highest its positions carry, if any."""
        return max((p["seq"] for p in self.positions if "seq" in p), default=None)


# ---------------------------------------------------------------- parsing (device -> server)


def parse_worker_frame(text_data: str | None, bytes_data: bytes | None = None, *, now=None):
    """Return an AuthFrame or a PositionsFrame, or raise ClientError naming what is wrong."""
    if text_data is None:
        raise ClientError("binary_frame", "send frames as text (JSON), not binary")
    if len(text_data) > MAX_FRAME_CHARS:
        raise ClientError(
            "frame_too_large", f"a frame may hold at most {MAX_FRAME_CHARS} characters"
        )
    frame = decode_json(text_data)
    if type(frame) is not dict:
        raise ClientError("invalid_frame", "a frame must be a JSON object")
    now = time.time() if now is None else now
    frame_type = frame.get("type", "position")
    if frame_type == "position":
        return PositionsFrame([check_position(frame, now)])
    if frame_type == "batch":
        return PositionsFrame(_batch(frame, now))
    if frame_type == "auth":
        token = frame.get("token")
        # Tokens are ASCII (tt_ and URL-safe base64); anything else cannot be one.
        if type(token) is not str or not token or not token.isascii() or len(token) > 256:
            raise ClientError("invalid_field", "token must be a non-empty ASCII string")
        return AuthFrame(token)
    raise ClientError("invalid_frame", "type must be one of position, batch, auth")


def _reject_non_finite(name: str):
    raise ClientError("not_finite", f"{name} is not a number JSON allows")


def decode_json(text: str | bytes, what: str = "the frame"):
    """Return the JSON value of `text` (NaN and Infinity refused), or raise ClientError."""
    try:
        return json.loads(text, parse_constant=_reject_non_finite)
    except (ValueError, RecursionError):
        raise ClientError("invalid_json", f"{what} is not valid JSON") from None


def is_number(value) -> bool:
    """Whether a decoded JSON value is a number (bool is an int subclass, so types are exact)."""
    return type(value) is float or type(value) is int


def finite_number(value, label: str) -> float:
    """Return a decoded JSON number as a finite float, or raise ClientError naming `label`."""
    if not is_number(value):
        raise ClientError("invalid_field", f"{label} must be a number")
    try:
        number = float(value)
    except OverflowError:
        raise ClientError("not_finite", f"{label} is too large") from None
    if not math.isfinite(number):
        raise ClientError("not_finite", f"{label} must be finite")
    return number


def scaled(value, factor: float):
    """A number in another unit (an integer too large for a float: infinity, which validation
    refuses); anything else as it is, for validation to name."""
    if not is_number(value):
        return value
    try:
        return float(value) * factor
    except OverflowError:
        return math.inf


def _batch(frame: dict, now: float) -> list[dict]:
    positions = frame.get("positions")
    if type(positions) is not list:
        raise ClientError("invalid_field", "positions must be a list")
    if len(positions) > MAX_BATCH_POSITIONS:
        raise ClientError(
            "batch_too_large", f"a batch may hold at most {MAX_BATCH_POSITIONS} positions"
        )
    return [
        check_position(item, now, f"positions[{index}].") for index, item in enumerate(positions)
    ]


def check_position(item, now: float, where: str = "", labels: dict[str, str] | None = None) -> dict:
    """Return the position `item` describes, validated; or raise ClientError naming the field
    (by its name in `labels`, for protocols that name it otherwise, such as OsmAnd's lon)."""
    if type(item) is not dict:
        raise ClientError("invalid_frame", f"{where or 'a position'} must be an object")
    labels = labels or {}
    position = {}
    for name, required, lowest, highest in POSITION_FIELDS:
        value = item.get(name)
        label = where + labels.get(name, name)
        if value is None:
            if required:
                raise ClientError("invalid_field", f"{label} is required")
            continue
        value = finite_number(value, label)
        if not lowest <= value <= highest:
            raise ClientError("out_of_range", f"{label} must be between {lowest:g} and {highest:g}")
        position[name] = value
    ahead = max_clock_ahead()
    if position["ts"] > now + ahead:
        raise ClientError(
            "invalid_ts",
            f"{where}{labels.get('ts', 'ts')} is more than {ahead:g} s ahead of the server clock",
        )
    seq = item.get("seq")
    if seq is not None:
        if type(seq) is not int:
            raise ClientError("invalid_field", f"{where}seq must be an integer")
        if not 0 <= seq <= MAX_SEQ:
            raise ClientError("out_of_range", f"{where}seq must be between 0 and {MAX_SEQ}")
        position["seq"] = seq
    return position


# ---------------------------------------------------------------- encoding (server -> client)

# Fields of a position that managers see; seq matters to the device only.
FEED_FIELDS = ("lat", "lng", "ts", "acc", "speed", "heading", "alt", "batt")


def _encode(frame: dict) -> str:
    # orjson: a third of json.dumps's time for these frames. What is encoded was validated
    # (finite numbers only), so its writing NaN as null never arises.
    return orjson.dumps(frame).decode()


def feed_position(worker_id: int, position: dict) -> dict:
    """Return the position as managers see it, tagged with its worker's id."""
    entry = {"id": worker_id}
    for name in FEED_FIELDS:
        if name in position:
            entry[name] = position[name]
    return entry


def encode_positions(positions: list[dict]) -> str:
    return _encode({"type": "positions", "positions": positions})


def encode_presence(worker_id: int, name: str | None, online: bool) -> str:
    # The name is unknown when a replica reports the workers of another, dead, replica offline.
    frame = {"type": "presence", "id": worker_id}
    if name is not None:
        frame["name"] = name
    frame["online"] = online
    return _encode(frame)


def encode_snapshot(team_slug: str, workers: list[dict]) -> str:
    return _encode({"type": "snapshot", "team": team_slug, "workers": workers})


def encode_ack(seq: int) -> str:
    return _encode({"type": "ack", "seq": seq})


def encode_error(code: str, detail: str) -> str:
    return _encode({"type": "error", "code": code, "detail": detail})
