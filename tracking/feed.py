"""The team feed: the channel-layer messages a team's group carries, built in one place.

A team's group holds the relay channel of every replica with a manager of that team
(tracking.watchers). Replicas with the team's devices send it one `positions.batch` per window
(tracking.devices) and a `presence.changed` whenever a worker comes online or goes offline.
"""

from tracking import protocol
from tracking.positions import FeedPosition, TeamPositions

POSITIONS_BATCH = "positions.batch"
PRESENCE_CHANGED = "presence.changed"
# Positions in one message: a big team's window goes in several, each well under the 1 MB a
# channel layer must carry (about 120 bytes a position; the Kafka layer refuses more than 1 MB).
MAX_POSITIONS_PER_MESSAGE = 2000


def team_group(team_id: int) -> str:
    """Name the group a team's messages go to: the relays of replicas with its managers."""
    return f"team.{team_id}"


def positions_messages(team_id: int, positions: TeamPositions) -> list[dict]:
    """Return the messages of a team's newest positions of one window: one, or for a team of
    thousands, one per MAX_POSITIONS_PER_MESSAGE (managers merge them: tracking.watchers)."""
    feed: list[FeedPosition] = [protocol.feed_position(w, p) for w, p in positions.items()]
    return [
        {
            "type": POSITIONS_BATCH,
            "team_id": team_id,
            "positions": feed[i : i + MAX_POSITIONS_PER_MESSAGE],
        }
        for i in range(0, len(feed), MAX_POSITIONS_PER_MESSAGE)
    ]


def presence_message(
    team_id: int, worker_id: int, *, name: str | None, online: bool, version: int
) -> dict:
    """Return the message of a worker's presence change, with its frame encoded once for all
    managers and the version that orders it (tracking.state)."""
    return {
        "type": PRESENCE_CHANGED,
        "team_id": team_id,
        "worker_id": worker_id,
        "version": version,
        "online": online,
        "text": protocol.encode_presence(worker_id, name, online),
    }


async def group_send_many(layer, messages: list[tuple[str, dict]]) -> None:
    """Send (group, message) pairs, returning once the layer has taken every one, and raising if
    it could not: in one round trip where the layer can (our Redis pub/sub and Kafka layers'
    `group_send_many`), else one by one."""
    if "group_send_many" in getattr(layer, "extensions", ()):
        await layer.group_send_many(messages)
    else:
        for group, message in messages:
            await layer.group_send(group, message)
