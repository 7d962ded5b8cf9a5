"""The OsmAnd protocol of Traccar Client and OsmAnd: one position per HTTP request, at /osmand/.

Two shapes, as the clients send them (see docs/protocol.md):
- parameters: `id` (or `deviceid`), `lat`, `lon` (or `location=lat,lon`), `timestamp`, `speed`
  (knots), `bearing` (or `heading`), `altitude`, `accuracy`, `batt`, ... in the query string
  (a GET, or a POST with an empty body, as the classic Android client sends), or, when the query
  string is empty, in a form-encoded body (Traccar Client 10);
- JSON (`Content-Type: application/json`, Traccar Client 9): `{"device_id", "location":
  {"timestamp", "coords": {"latitude", "longitude", "accuracy", "speed" (m/s), "heading",
  "altitude"}, "battery": {"level" (0..1)}}}`.
Unknown parameters are ignored. The device id is the worker's token.
"""

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

from tracking.positions import Position
from tracking.protocol import (
    ClientError,
    check_position,
    decode_json,
    finite_number,
    is_number,
    scaled,
)

KNOT = 1852 / 3600  # m/s
# Epoch values above this are milliseconds (in seconds it is the year 5138).
EPOCH_MILLISECONDS_FROM = 1e11
MAX_BODY_BYTES = 16 * 1024  # one position takes a few hundred bytes

# Our field names as the OsmAnd protocol calls them, for error texts.
PARAMETER_LABELS = {
    "lng": "lon",
    "ts": "timestamp",
    "acc": "accuracy",
    "heading": "bearing",
    "alt": "altitude",
}
JSON_LABELS = {
    "lat": "location.coords.latitude",
    "lng": "location.coords.longitude",
    "ts": "location.timestamp",
    "acc": "location.coords.accuracy",
    "speed": "location.coords.speed",
    "heading": "location.coords.heading",
    "alt": "location.coords.altitude",
    "batt": "location.battery.level",
}


@dataclass(frozen=True)
class Upload:
    device_id: str
    position: Position


def parse(query_string: str, body: bytes, content_type: str, *, now: float) -> Upload:
    """Return the device id and position of one OsmAnd request, or raise ClientError."""
    if len(body) > MAX_BODY_BYTES:
        raise ClientError("too_large", f"a request may hold at most {MAX_BODY_BYTES} bytes")
    if content_type.split(";")[0].strip().lower() == "application/json":
        return _parse_json(body, now)
    if query_string:
        parameters = _parameters(query_string)
    else:
        try:
            parameters = _parameters(body.decode())
        except UnicodeDecodeError:
            raise ClientError("invalid_field", "the form is not UTF-8") from None
    return _parse_parameters(parameters, now)


def _parameters(text: str) -> dict[str, str]:
    """The first value of each parameter (a client that repeats one means the first)."""
    return {name: values[0] for name, values in parse_qs(text, keep_blank_values=True).items()}


def _parse_parameters(parameters: dict[str, str], now: float) -> Upload:
    device_id = parameters.get("id") or parameters.get("deviceid")
    if not device_id:
        raise ClientError("invalid_field", "id is required")
    lat, lon = parameters.get("lat"), parameters.get("lon")
    if "location" in parameters and lat is None and lon is None:
        lat, _, lon = parameters["location"].partition(",")
    item = {
        "lat": _number(lat, "lat"),
        "lng": _number(lon, "lon"),
        "ts": parse_timestamp(parameters.get("timestamp"), now),
        "acc": _number(parameters.get("accuracy"), "accuracy"),
        "speed": scaled(_number(parameters.get("speed"), "speed"), KNOT),
        "heading": _number(parameters.get("bearing", parameters.get("heading")), "bearing"),
        "alt": _number(parameters.get("altitude"), "altitude"),
        "batt": _number(parameters.get("batt"), "batt"),
    }
    return Upload(device_id, check_position(item, now, labels=PARAMETER_LABELS))


def _parse_json(body: bytes, now: float) -> Upload:
    message = decode_json(body, "the body")
    if type(message) is not dict:
        raise ClientError("invalid_json", "the body must be a JSON object")
    device_id = message.get("device_id")
    if type(device_id) is not str or not device_id:
        raise ClientError("invalid_field", "device_id is required")
    location = _object(message, "location", "location")
    coords = _object(location, "coords", "location.coords")
    battery = location.get("battery")
    level = battery.get("level") if type(battery) is dict else None
    item = {
        "lat": coords.get("latitude"),
        "lng": coords.get("longitude"),
        "ts": parse_timestamp(location.get("timestamp"), now, "location.timestamp"),
        "acc": coords.get("accuracy"),
        "speed": coords.get("speed"),
        "heading": coords.get("heading"),
        "alt": coords.get("altitude"),
        # Level is 0..1; unknown is -1 on some phones.
        "batt": scaled(level, 100) if is_number(level) and level >= 0 else None,
    }
    # Phones report an unknown speed or heading as -1.
    for name in ("speed", "heading"):
        if is_number(item[name]) and item[name] < 0:
            item[name] = None
    return Upload(device_id, check_position(item, now, labels=JSON_LABELS))


def parse_timestamp(value, now: float, label: str = "timestamp") -> float:
    """Unix seconds from epoch seconds or milliseconds (a number or its text), ISO 8601, or
    `yyyy-MM-dd HH:mm:ss` (UTC unless an offset is given). No timestamp means now, as Traccar
    takes it."""
    if value is None or value == "":
        return now
    if type(value) is str:
        try:
            value = float(value)
        except ValueError:
            return _parse_date(value, label)
    if not is_number(value):
        raise ClientError("invalid_field", f"{label} must be a time")
    seconds = finite_number(value, label)
    return seconds / 1000 if abs(seconds) >= EPOCH_MILLISECONDS_FROM else seconds


def _parse_date(text: str, label: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ClientError(
            "invalid_field",
            f"{label} must be epoch seconds or milliseconds, ISO 8601, or yyyy-MM-dd HH:mm:ss",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _number(text: str | None, label: str) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise ClientError("invalid_field", f"{label} must be a number") from None


def _object(container: dict, key: str, label: str) -> dict:
    value = container.get(key)
    if type(value) is not dict:
        raise ClientError("invalid_field", f"{label} is required")
    return value
