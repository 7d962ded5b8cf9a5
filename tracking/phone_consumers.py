"""The phone apps' HTTP endpoints: OsmAnd (Traccar Client, OsmAnd) at /osmand/ and OwnTracks
at /owntracks/. Each authenticates the device by the worker's token, validates the request
(tracking.osmand, tracking.owntracks) and hands the position to the relay's HTTP devices
(tracking.uploads), answering 200 only once the position is as safe as an acked socket frame.

They are Channels HTTP consumers routed before Django (teamtrack/asgi.py), not Django views:
Django's ASGI handler runs each request's sync middleware and signals on a thread of the
request's own, which cost 7 times the CPU of a socket frame per upload and, through the token
lookup on that thread, a database connection per request (measured: loadtest/results/phones-*).
Here, as on the sockets, the token lookup runs on the replica's one database thread.

Answers other than 200 are short plain texts; docs/protocol.md lists them. The token travels in
the URL (OsmAnd) or in Basic auth (OwnTracks): nothing here logs either.
"""

import asyncio
import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.http import AsyncHttpConsumer
from django.db import DatabaseError

from teams import selectors
from tracking import limits, metrics, osmand, owntracks
from tracking.protocol import ClientError
from tracking.relay import RelayUnavailable, get_relay
from tracking.uploads import DeviceEnded, HttpDevice

logger = logging.getLogger(__name__)

# A request over the worker's rate waits this long at most for the budget to allow it: a phone
# emptying its offline buffer sends one request after another, and is slowed, not refused.
MAX_RATE_WAIT = 1.0
MAX_REQUEST_BYTES = 64 * 1024  # both protocols' limits are lower; this guards the reading


@dataclass
class Answer:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def text(status: int, message: str, **headers: str) -> Answer:
    return Answer(status, message.encode(), headers=headers)


def json_answer(messages: list) -> Answer:
    return Answer(200, json.dumps(messages, separators=(",", ":")).encode(), "application/json")


@dataclass(frozen=True)
class PhoneRequest:
    method: str
    query_string: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    address: str  # the client's, as nginx saw it (teamtrack.proxies)


class PhoneUploadConsumer(AsyncHttpConsumer):
    """One request of a phone app: read it, answer it, log a refusal (never the request)."""

    channel_layer_alias = None  # no channel of its own: the relay has the replica's one
    methods: tuple[str, ...] = ("POST",)
    protocol = ""  # in the log

    async def http_request(self, message):
        if sum(map(len, self.body)) + len(message.get("body", b"")) > MAX_REQUEST_BYTES:
            await self.reply(text(413, f"a request may hold at most {MAX_REQUEST_BYTES} bytes"))
            raise StopConsumer()
        await super().http_request(message)

    async def handle(self, body: bytes):
        request = PhoneRequest(
            method=self.scope["method"],
            query_string=self.scope.get("query_string", b"").decode("latin-1"),
            headers={
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in self.scope.get("headers", ())
            },
            body=body,
            address=(self.scope.get("client") or ("", 0))[0],
        )
        if request.method not in self.methods:
            allowed = ", ".join(self.methods)
            answer = text(405, f"use {' or '.join(self.methods)}", Allow=allowed)
        else:
            try:
                answer = await self.answer(request)
            except DatabaseError:
                logger.exception("The database failed a %s upload", self.protocol)
                answer = text(503, "the server cannot check devices right now; send it again")
        await self.reply(answer)

    async def answer(self, request: PhoneRequest) -> Answer:
        raise NotImplementedError

    async def reply(self, answer: Answer) -> None:
        if answer.status >= 400:
            logger.info(
                "Refused %s upload: %s %s", self.protocol, answer.status, answer.body.decode()
            )
        headers = [(b"content-type", answer.content_type.encode())]
        headers += [(name.encode(), value.encode()) for name, value in answer.headers.items()]
        await self.send_response(answer.status, answer.body, headers=headers)


class OsmAndConsumer(PhoneUploadConsumer):
    """One OsmAnd position; 200 with an empty body once it is safe."""

    methods = ("GET", "POST")
    protocol = "OsmAnd"

    async def answer(self, request: PhoneRequest) -> Answer:
        try:
            upload = osmand.parse(
                request.query_string,
                request.body,
                request.headers.get("content-type", ""),
                now=time.time(),
            )
        except ClientError as error:
            return rejected(error)
        worker = await authenticate(upload.device_id)
        if worker is None:
            return await refused(request, text(403, "unknown or revoked device id"))
        device = await take(worker, [upload.position])
        return device if isinstance(device, Answer) else Answer(200)


class OwnTracksConsumer(PhoneUploadConsumer):
    """One OwnTracks message; 200 with a JSON array (teammates, if the team shares)."""

    protocol = "OwnTracks"

    async def answer(self, request: PhoneRequest) -> Answer:
        token = basic_auth_password(request.headers.get("authorization", ""))
        worker = await authenticate(token or "")
        if worker is None:
            unauthorized = text(401, "unknown or revoked token")
            unauthorized.headers["WWW-Authenticate"] = 'Basic realm="TeamTrack"'
            return await refused(request, unauthorized)
        try:
            message = owntracks.parse(request.body, now=time.time())
        except ClientError as error:
            return rejected(error)
        if message.kind == owntracks.OFFLINE:
            over_rate = await within_rate(worker)
            if over_rate is not None:
                return over_rate
            await get_relay().sign_off(worker.id)
            return json_answer([])
        positions = [message.position] if message.kind == owntracks.LOCATION else []
        device = await take(worker, positions)
        if isinstance(device, Answer):
            return device
        if not worker.team.teammates_in_apps:
            return json_answer([])
        return json_answer(await teammates(worker, device))


async def within_rate(worker) -> Answer | None:
    """Spend one of the worker's budget (waiting up to MAX_RATE_WAIT for it); None if it was
    there, else the 429 to answer."""
    wait = await limits.get_limits().take_upload(worker.id)
    if not wait:
        return None
    if wait <= MAX_RATE_WAIT:
        await asyncio.sleep(wait)
        if not await limits.get_limits().take_upload(worker.id):
            return None
    metrics.POSITIONS_REJECTED.labels("rate_limited").inc()
    return text(429, "too many requests for this device; slow down")


async def take(worker, positions: list) -> HttpDevice | Answer:
    """Hand the positions to the relay within the worker's rate; return the worker's device
    once they are safe, or the answer that says why not."""
    over_rate = await within_rate(worker)
    if over_rate is not None:
        return over_rate
    try:
        device = await get_relay().uploads.upload(
            team_id=worker.team_id, worker_id=worker.id, name=worker.name, positions=positions
        )
    except (RelayUnavailable, DeviceEnded):
        device = None
    if device is None:
        return text(
            503, "the position could not be stored yet; send it again", **{"Retry-After": "5"}
        )
    return device


async def teammates(worker, device: HttpDevice) -> list[dict]:
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


async def refused(request: PhoneRequest, answer: Answer) -> Answer:
    """Count a failed login; answer 429 instead if this address failed too often."""
    if await limits.get_limits().login_failed(request.address):
        metrics.RATE_LIMITED_CLOSES.labels("failed_logins").inc()
        return text(429, "too many failed logins from this address; wait a minute")
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


def rejected(error: ClientError) -> Answer:
    metrics.POSITIONS_REJECTED.labels(error.code).inc()
    return text(400, error.detail)
