"""The phone apps' HTTP endpoints: OsmAnd (Traccar Client, OsmAnd) at /osmand/ and OwnTracks
at /owntracks/. Each authenticates the device by the worker's token, validates the request
(tracking.osmand, tracking.owntracks) and hands the position to the relay's HTTP devices
(tracking.uploads), answering 200 only once the position is as safe as an acked socket frame.

Answers other than 200 are short plain texts; docs/protocol.md lists them. The token travels in
the URL (OsmAnd) or in Basic auth (OwnTracks): nothing here logs either.
"""

import asyncio
import base64
import binascii
import time

from channels.db import database_sync_to_async
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from teams import selectors
from tracking import limits, metrics, osmand, owntracks
from tracking.protocol import ClientError
from tracking.relay import RelayUnavailable, get_relay
from tracking.uploads import HttpDevice

# A request over the worker's rate waits this long at most for the budget to allow it: a phone
# emptying its offline buffer sends one request after another, and is slowed, not refused.
MAX_RATE_WAIT = 1.0


def text(status: int, message: str, **headers) -> HttpResponse:
    return HttpResponse(message, status=status, content_type="text/plain", headers=headers)


@csrf_exempt
async def osmand_upload(request):
    """Take one OsmAnd position; 200 with an empty body once it is safe."""
    if request.method not in ("GET", "POST"):
        return text(405, "use GET or POST", Allow="GET, POST")
    try:
        upload = osmand.parse(
            request.META.get("QUERY_STRING", ""),
            request.body,
            request.content_type or "",
            now=time.time(),
        )
    except ClientError as error:
        return rejected(error)
    worker = await authenticate(upload.device_id)
    if worker is None:
        return refused(request, text(403, "unknown or revoked device id"))
    device = await take(worker, [upload.position])
    return device if isinstance(device, HttpResponse) else HttpResponse(status=200)


@csrf_exempt
async def owntracks_upload(request):
    """Take one OwnTracks message; 200 with a JSON array (teammates, if the team shares)."""
    if request.method != "POST":
        return text(405, "use POST", Allow="POST")
    token = basic_auth_password(request.headers.get("Authorization", ""))
    worker = await authenticate(token or "")
    if worker is None:
        unauthorized = text(401, "unknown or revoked token")
        unauthorized["WWW-Authenticate"] = 'Basic realm="TeamTrack"'
        return refused(request, unauthorized)
    try:
        message = owntracks.parse(request.body, now=time.time())
    except ClientError as error:
        return rejected(error)
    if message.kind == owntracks.OFFLINE:
        over_rate = await within_rate(worker)
        if over_rate is not None:
            return over_rate
        await get_relay().sign_off(worker.id)
        return JsonResponse([], safe=False)
    positions = [message.position] if message.kind == owntracks.LOCATION else []
    device = await take(worker, positions)
    if isinstance(device, HttpResponse):
        return device
    if not worker.team.teammates_in_apps:
        return JsonResponse([], safe=False)
    return JsonResponse(await teammates(worker, device), safe=False)


async def within_rate(worker) -> HttpResponse | None:
    """Spend one of the worker's budget (waiting up to MAX_RATE_WAIT for it); None if it was
    there, else the 429 to answer."""
    limit = limits.worker_frame_limit(worker.id)
    if limit.take():
        return None
    wait = limit.seconds_until_token()
    if wait <= MAX_RATE_WAIT:
        await asyncio.sleep(wait)
        if limit.take():
            return None
    metrics.POSITIONS_REJECTED.labels("rate_limited").inc()
    return text(429, "too many requests for this device; slow down")


async def take(worker, positions: list) -> HttpDevice | HttpResponse:
    """Hand the positions to the relay within the worker's rate; return the worker's device
    once they are safe, or the answer that says why not."""
    over_rate = await within_rate(worker)
    if over_rate is not None:
        return over_rate
    try:
        device = await get_relay().uploads.upload(
            team_id=worker.team_id, worker_id=worker.id, name=worker.name, positions=positions
        )
    except RelayUnavailable:
        device = None
    if device is None:
        return text(
            503, "the position could not be stored yet; send it again", **{"Retry-After": "5"}
        )
    return device


async def teammates(worker, device) -> list[dict]:
    """The OwnTracks messages that show a worker's teammates in the app."""
    roster = await database_sync_to_async(selectors.team_roster)(team=worker.team)
    names = {worker_id: name for worker_id, name in roster if worker_id != worker.id}
    latest = await get_relay().latest_positions(worker.team_id)
    return owntracks.teammate_messages(worker.team.slug, names, latest, carded=device.carded)


async def authenticate(token: str):
    """Return the active worker holding this token, or None. A good token is let in even from
    an address blocked for failed logins: phones share carriers' NAT addresses, and one phone
    left with a rotated token, retrying for ever, must not lock out the others."""
    if not token or not token.isascii() or len(token) > 256:
        return None
    return await database_sync_to_async(selectors.worker_get_by_token)(token=token)


def refused(request, answer: HttpResponse) -> HttpResponse:
    """Count a failed login, or answer 429 if this address already failed too often."""
    address = request.META.get("REMOTE_ADDR", "")
    failed_logins = limits.failed_logins()
    if failed_logins.blocked(address):
        metrics.RATE_LIMITED_CLOSES.labels("failed_logins").inc()
        return text(429, "too many failed logins from this address; wait a minute")
    failed_logins.record_failure(address)
    return answer


def basic_auth_password(header: str) -> str | None:
    """The password of an `Authorization: Basic` header (the user name is not used)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, separator, password = decoded.partition(":")
    return password if separator and password else None


def rejected(error: ClientError) -> HttpResponse:
    metrics.POSITIONS_REJECTED.labels(error.code).inc()
    return text(400, error.detail)
