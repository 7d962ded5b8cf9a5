"""Health checks for load balancers: /healthz (the process answers), /readyz (it can do its job)."""

import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import Http404, HttpResponse, JsonResponse

from tracking import metrics
from tracking.relay import get_relay

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0
HEALTH_MESSAGE = {"type": "health.check"}

# One channel per layer and event loop, reused by every check: the Redis pub/sub layer
# subscribes a new channel for good, so a new one per check would leak subscriptions.
_health_channels: dict[tuple[int, int], str] = {}


async def healthz(request):
    return HttpResponse("ok\n", content_type="text/plain")


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def check_channel_layer(layer) -> None:
    """Send a message to ourselves through the layer and receive it back; ask its broker too."""
    # A layer may deliver to its own process without a broker (the Kafka layer does): ask it.
    if hasattr(layer, "ping"):
        await layer.ping()
    key = (id(layer), id(asyncio.get_running_loop()))
    channel = _health_channels.get(key)
    if channel is None:
        channel = _health_channels[key] = await layer.new_channel()
    try:
        await layer.send(channel, HEALTH_MESSAGE)
        while await layer.receive(channel) != HEALTH_MESSAGE:
            pass
    except BaseException:
        # A cancelled receive unsubscribes the channel; the next check makes a new one.
        del _health_channels[key]
        raise


async def run_check(name: str, check) -> str:
    """Run one readiness check (a coroutine) with a time limit; return "ok" or "unavailable"."""
    try:
        await asyncio.wait_for(check, CHECK_TIMEOUT)
    except Exception as error:
        logger.warning("Readiness check of the %s failed: %r", name, error)
        return "unavailable"
    return "ok"


async def readyz(request):
    # A database, layer and Redis round trip per request: for probes, not for the public.
    if not metrics.from_internal_network(request.META.get("REMOTE_ADDR")):
        raise Http404
    checks = {
        "database": await run_check("database", sync_to_async(_check_database)()),
        "channel_layer": await run_check("channel layer", check_channel_layer(get_channel_layer())),
        "relay_state": await run_check("relay state", get_relay().state.ping()),
    }
    ready = all(result == "ok" for result in checks.values())
    return JsonResponse({"ready": ready, **checks}, status=200 if ready else 503)
