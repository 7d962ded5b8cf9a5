"""Messages between replicas that close sockets, wherever they are: the only thing the domain
(teams/) asks of the live side (tracking/), so that neither imports the other's internals.

Every replica's relay channel is in RELAYS_GROUP and acts on these messages for the sockets it
holds (tracking.relay). One group, rather than one per worker or user, keeps a replica's group
memberships (Redis subscriptions, Kafka partitions) down to the teams it serves; revocations and
logouts are rare and reach each replica once.
"""

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

RELAYS_GROUP = "relays"

WORKER_REVOKED = "worker.revoked"  # {"worker_id"}: its token stopped working
# {"worker_id"}: its phone app said it stops reporting (OwnTracks' lwt): its HTTP devices end.
WORKER_SIGNED_OFF = "worker.signed_off"
# {"worker_id", "seq"}: a socket of the worker logged in; its older sockets close (4409).
WORKER_LOGGED_IN = "worker.logged_in"
# {"user_id", "team_id"}: the user's maps of that team (team_id) or of every team (None) close.
WATCHER_REVOKED = "watcher.revoked"


def close_worker_sockets(worker_id: int) -> None:
    """Close every open socket of a worker whose token stopped working (from sync code)."""
    _tell_every_relay({"type": WORKER_REVOKED, "worker_id": worker_id})


def close_manager_sockets(user_id: int, *, team_id: int | None = None) -> None:
    """Close a user's maps, of one team (they no longer manage it: 4403) or of all (logged out,
    deactivated or deleted: 4401), on every replica (from sync code)."""
    _tell_every_relay({"type": WATCHER_REVOKED, "user_id": user_id, "team_id": team_id})


def _tell_every_relay(message: dict) -> None:
    # Not confirmed: a sync view must not wait for a slow broker, once per revoked worker. The
    # Kafka layer logs a record the broker did not take (tracking/layers/kafka.py).
    try:
        async_to_sync(get_channel_layer().group_send)(RELAYS_GROUP, message)
    except Exception:
        # The token or session is already gone from the database, so no new socket gets in;
        # an open one stays until it reconnects. The change itself must not fail for that.
        logger.exception("Could not tell the relays to close sockets: %s", message["type"])
