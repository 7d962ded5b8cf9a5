"""OwnTracks in HTTP mode, at /owntracks/: one JSON message per POST, and the JSON array that
answers it (see docs/protocol.md).

A `location` message is a position; `lwt` says the phone stops reporting; every other type
(`transition`, `waypoint`, `card`, ...) and an empty body are accepted and ignored. The answer
is `[]`, or, when the team shares positions in the apps, each teammate's latest position as a
`location` message, after a `card` naming it the first time this session hears of it.
"""

from dataclasses import dataclass

from tracking.positions import Position
from tracking.protocol import ClientError, check_position, decode_json, is_number, scaled

KILOMETRE_PER_HOUR = 1 / 3.6  # m/s
MAX_BODY_BYTES = 64 * 1024  # a location takes a few hundred bytes; waypoint lists take more

LABELS = {"lng": "lon", "ts": "tst", "acc": "acc", "speed": "vel", "heading": "cog"}

LOCATION, OFFLINE, IGNORED = "location", "lwt", "ignored"


@dataclass(frozen=True)
class Message:
    kind: str  # LOCATION, OFFLINE or IGNORED
    position: Position | None = None


def parse(body: bytes, *, now: float) -> Message:
    """Return what one OwnTracks message asks of us, or raise ClientError."""
    if len(body) > MAX_BODY_BYTES:
        raise ClientError("too_large", f"a message may hold at most {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return Message(IGNORED)
    message = decode_json(body, "the body")
    if type(message) is not dict:
        raise ClientError("invalid_json", "the body must be a JSON object")
    message_type = message.get("_type")
    if message_type == "lwt":
        return Message(OFFLINE)
    if message_type != "location":
        return Message(IGNORED)
    item = {
        "lat": message.get("lat"),
        "lng": message.get("lon"),
        "ts": message.get("tst"),
        "acc": message.get("acc"),
        "speed": scaled(message.get("vel"), KILOMETRE_PER_HOUR),
        "heading": message.get("cog"),
        "alt": message.get("alt"),
        "batt": message.get("batt"),
    }
    if item["ts"] is None:
        raise ClientError("invalid_field", "tst is required")
    # The app sends -1 or omits what it does not know.
    for name in ("speed", "heading", "batt"):
        if is_number(item[name]) and item[name] < 0:
            item[name] = None
    return Message(LOCATION, check_position(item, now, labels=LABELS))


def tracker_id(name: str) -> str:
    """The two characters the app shows on a teammate's pin: the initials of the name."""
    initials = "".join(word[0] for word in name.split() if word[:1].isalnum())
    return (initials or name or "?")[:2].upper()


def topic(team_slug: str, worker_id: int) -> str:
    """The name the app files a teammate under (HTTP mode has no MQTT topics; the app still keys
    its contacts by this field)."""
    return f"owntracks/{team_slug}/{worker_id}"


def teammate_messages(
    team_slug: str,
    teammates: dict[int, str],
    latest: dict[int, Position],
    *,
    carded: set[int],
) -> list[dict]:
    """The answer that shows teammates in the app: for each with a known position, a `card`
    (the first time only: its id is then added to `carded`) and its `location`."""
    messages = []
    for worker_id, name in teammates.items():
        position = latest.get(worker_id)
        if position is None:
            continue
        tid, name_topic = tracker_id(name), topic(team_slug, worker_id)
        if worker_id not in carded:
            carded.add(worker_id)
            messages.append({"_type": "card", "name": name, "tid": tid, "topic": name_topic})
        location = {
            "_type": "location",
            "lat": position["lat"],
            "lon": position["lng"],
            "tst": int(position["ts"]),
            "tid": tid,
            "topic": name_topic,
        }
        for ours, theirs, factor in (("acc", "acc", 1), ("alt", "alt", 1), ("speed", "vel", 3.6)):
            if ours in position:
                location[theirs] = round(position[ours] * factor)
        if "heading" in position:
            location["cog"] = round(position["heading"])
        if "batt" in position:
            location["batt"] = round(position["batt"])
        messages.append(location)
    return messages
