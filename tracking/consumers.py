"""WebSocket consumers: authenticate, validate, and hand everything else to the relay.

WorkerConsumer serves a worker's device on /ws/worker/; TeamConsumer serves a manager's map on
/ws/teams/<slug>/. docs/protocol.md describes both.
"""

import asyncio
import logging
import random
from typing import NamedTuple

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError
from redis.exceptions import RedisError

from teams import selectors
from tracking import limits, metrics, protocol
from tracking.acks import SocketAcks
from tracking.protocol import ClientError
from tracking.relay import RelayUnavailable, get_relay

logger = logging.getLogger(__name__)

# What an unreachable channel layer raises from inside Channels' own dispatch loop.
LAYER_ERRORS = (RedisError, OSError)


def bearer_token(scope) -> str | None:
    """Return the token of an `Authorization: Bearer` header, if the handshake carried one."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class RelaySocketConsumer(AsyncWebsocketConsumer):
    """Base of both sockets: an unreachable channel layer closes a socket with 4503, never 1011."""

    kind = ""  # "worker" or "manager", in metrics
    accepted = False
    closing = False  # we closed it: frames still on their way are ignored

    async def send_error(self, error: ClientError):
        metrics.POSITIONS_REJECTED.labels(error.code).inc()
        text = protocol.encode_error(error.code, error.detail)
        await self.send(text_data=text)
        metrics.frame_sent("error", text)

    async def send_frame(self, text: str, frame_type: str):
        """Send a frame the relay encoded (once, for every socket it goes to)."""
        await self.send(text_data=text)

    async def close_with(self, code: int):
        """Close the socket with one of the codes of tracking.protocol."""
        await self.close(code=code)

    async def accept(self, subprotocol=None, headers=None):
        await super().accept(subprotocol, headers)
        self.accepted = True
        metrics.OPEN_SOCKETS.labels(self.kind).inc()

    async def close(self, code=None, reason=None):
        self.closing = True
        await super().close(code, reason)

    async def websocket_receive(self, message):
        if not self.closing:
            await super().websocket_receive(message)

    async def __call__(self, scope, receive, send):
        """Take the client's frames in a plain loop, with no channel layer of the socket's own.

        Channels' loop costs, per frame, a task, an asyncio.wait and a thread hop (it closes
        stale database connections before every handler): about as much CPU again as daphne
        spends receiving the frame. Our sockets need none of it: they read the database only at
        connect (through database_sync_to_async, which does that closing itself), and the
        replica's relay, which has the one channel, calls them directly. One coroutine for the
        socket's life: each further one that awaited it would stay alive beside it.
        """
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            while True:
                message = await receive()
                await getattr(self, get_handler_name(message))(message)
        except StopConsumer:
            pass
        except LAYER_ERRORS as error:
            logger.warning("Closing a socket, the channel layer is unreachable: %r", error)
            if not self.accepted:
                await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": protocol.CLOSE_TRY_AGAIN})
            if self.accepted:
                await self.disconnect(protocol.CLOSE_TRY_AGAIN)
        finally:
            if self.accepted:
                metrics.OPEN_SOCKETS.labels(self.kind).dec()


class LoggedInWorker(NamedTuple):
    id: int
    team_id: int


class WorkerConsumer(RelaySocketConsumer):
    kind = "worker"
    worker: LoggedInWorker | None = None  # set once the device's token is accepted
    login_seq: int | None = None  # of its login: a newer one of the same worker closes this
    auth_timer = None
    acks: SocketAcks | None = None

    async def acknowledge(self, seq: int):
        """A frame the relay handed on is safe (tracking.devices): its ack goes out now or with
        the next one (tracking.acks)."""
        if self.acks is not None:
            await self.acks.frame_safe(seq)

    async def send_ack(self, seq: int):
        text = protocol.encode_ack(seq)
        try:
            await self.send(text_data=text)
        except Exception:
            return  # daphne: "send on a closed protocol"; the device resends after reconnecting
        metrics.frame_sent("ack", text)

    async def close(self, code=None, reason=None):
        if self.acks is not None and not self.closing:
            await self.acks.flush()  # what is safe is said before the close (a drain's 4012)
        await super().close(code, reason)

    async def connect(self):
        await self.accept()
        self.address = (self.scope.get("client") or ("", 0))[0]
        token = bearer_token(self.scope)
        if token is not None:
            await self.authenticate(token)
        else:
            # Browsers cannot set headers: they get AUTH_TIMEOUT to send an auth frame.
            self.auth_timer = asyncio.get_running_loop().call_later(
                protocol.AUTH_TIMEOUT, lambda: asyncio.ensure_future(self.refuse())
            )

    async def receive(self, text_data=None, bytes_data=None):
        if self.worker is not None and not self.frame_limit.take():
            self.acks.frame_refused()
            await self.refuse_flood()
            return
        try:
            frame = protocol.parse_worker_frame(text_data, bytes_data)
        except ClientError as error:
            if self.worker is None:
                await self.refuse()
            else:
                await self.refuse_frame(error)
            return
        if isinstance(frame, protocol.AuthFrame):
            if self.worker is None:
                await self.authenticate(frame.token)
            else:
                await self.refuse_frame(ClientError("invalid_frame", "already authenticated"))
        elif self.worker is None:
            await self.refuse()
        else:
            if frame.ack_seq is not None:
                self.acks.received(frame.ack_seq)
            get_relay().positions_received(
                self,
                team_id=self.worker.team_id,
                worker_id=self.worker.id,
                positions=frame.positions,
                ack_seq=frame.ack_seq,
            )

    async def refuse_frame(self, error: ClientError):
        """Answer a bad frame with an error frame; acks stop below it (tracking.acks)."""
        self.acks.frame_refused()
        await self.send_error(error)

    async def refuse_flood(self):
        """Drop a frame over the rate limit: say so once, and close a device that goes on."""
        if self.frame_limit.flooding:
            await self.refuse_rate_limited("frames")
        elif self.frame_limit.refused_in_a_row == 1:
            await self.send_error(ClientError("rate_limited", "too many frames; slow down"))
        else:
            metrics.POSITIONS_REJECTED.labels("rate_limited").inc()

    async def disconnect(self, code):
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        if self.acks is not None:
            self.acks.close()
        if self.worker is not None:
            await get_relay().worker_disconnected(
                self, team_id=self.worker.team_id, worker_id=self.worker.id
            )

    async def authenticate(self, token: str):
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        gate = limits.login_gate()  # a login storm waits here, in little memory
        try:
            async with asyncio.timeout(limits.LOGIN_WAIT_SECONDS):
                await gate.acquire()
        except TimeoutError:
            await self.close(code=protocol.CLOSE_TRY_AGAIN)
            return
        try:
            await self.log_in(token)
        except DatabaseError as error:
            # The token cannot be checked now (the database is down): not the device's fault.
            logger.warning("Refusing a device login for now, the database failed: %r", error)
            await self.close(code=protocol.CLOSE_TRY_AGAIN)
        finally:
            gate.release()

    async def log_in(self, token: str):
        worker = await database_sync_to_async(selectors.worker_get_by_token)(token=token)
        if worker is None:
            # A good token gets in from anywhere (carriers' NAT puts many phones behind one
            # address); a bad one from an address that failed too often is told to slow down.
            if await limits.get_limits().login_failed(self.address):
                await self.refuse_rate_limited("failed_logins")
            else:
                await self.refuse()
            return
        login = await limits.get_limits().worker_login(worker.id)
        if login is None:
            await self.refuse_rate_limited("logins")
            return
        self.login_seq = login.seq
        # What a revocation checks again (token_revoked); set before the relay knows the socket.
        self.token, self.token_holder = token, (worker.pk, worker.team_id)
        try:
            await get_relay().worker_connected(
                self,
                team_id=worker.team_id,
                worker_id=worker.id,
                name=worker.name,
                login_seq=login.seq,
            )
        except RelayUnavailable:
            await self.close(code=protocol.CLOSE_TRY_AGAIN)
            return
        self.frame_limit = login.frames
        relay = get_relay()
        self.acks = SocketAcks(
            self.send_ack,
            interval=settings.TEAMTRACK_ACK_INTERVAL,
            due=relay.due_acks,
            clock=relay.clock,
        )
        # Its ids only: a model instance would cost a kilobyte on each of thousands of sockets.
        self.worker = LoggedInWorker(worker.id, worker.team_id)

    async def token_revoked(self):
        """Close unless this socket's token still logs its worker in, in the same team (tracking.
        devices.DeviceSocket)."""
        try:
            worker = await database_sync_to_async(selectors.worker_get_by_token)(token=self.token)
        except DatabaseError:
            worker = None  # cannot tell: the safe side
        if worker is None or (worker.pk, worker.team_id) != self.token_holder:
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED)

    async def refuse(self):
        """Close the socket as unauthenticated."""
        await self.close(code=protocol.CLOSE_UNAUTHENTICATED)

    async def refuse_rate_limited(self, reason: str):
        metrics.RATE_LIMITED_CLOSES.labels(reason).inc()
        await self.close(code=protocol.CLOSE_RATE_LIMITED)


class TeamConsumer(RelaySocketConsumer):
    kind = "manager"
    team = None
    rechecking: asyncio.Task | None = None

    async def connect(self):
        await self.accept()
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED)
            return
        self.user_id = user.pk
        self.write_flow = self.scope.get("write_flow")  # tracking.backpressure
        slug = self.scope["url_route"]["kwargs"]["slug"]
        team = await database_sync_to_async(selectors.team_get_by_slug)(slug=slug)
        if team is None:
            await self.close(code=protocol.CLOSE_NOT_FOUND)
            return
        if not await database_sync_to_async(selectors.team_can_watch)(user=user, team=team):
            await self.close(code=protocol.CLOSE_FORBIDDEN)
            return
        self.team = team  # from here on, disconnect() stops the team's frames
        roster = await database_sync_to_async(selectors.team_roster)(team=team)
        try:
            await get_relay().watch_team(self, team_id=team.id, team_slug=team.slug, roster=roster)
        except RelayUnavailable:
            await self.close(code=protocol.CLOSE_TRY_AGAIN)
            return
        self.rechecking = asyncio.ensure_future(self.recheck_session_forever())

    async def recheck_session_forever(self):
        """Check the session again every SESSION_RECHECK_SECONDS (spread a little, so that maps
        opened together are not checked together): a map lives for hours, and a session can end
        in ways no signal reports (it expired, or was deleted from the database)."""
        session_key = self.scope["session"].session_key
        period = settings.TEAMTRACK_SESSION_RECHECK_SECONDS
        while True:
            await asyncio.sleep(period * random.uniform(0.9, 1.1))
            try:
                refusal = await database_sync_to_async(selectors.watcher_still_allowed)(
                    session_key=session_key, user_id=self.user_id, team=self.team
                )
            except DatabaseError:
                continue  # the database is down: the map stays, checked again next time
            except Exception:
                logger.exception("Could not check a map's session again; it stays open")
                continue
            if refusal is not None:
                codes = {"logged_out": protocol.CLOSE_UNAUTHENTICATED}
                await self.close(code=codes.get(refusal, protocol.CLOSE_FORBIDDEN))
                return

    async def receive(self, text_data=None, bytes_data=None):
        await self.send_error(
            ClientError("invalid_frame", "this socket only sends; it takes no frames")
        )

    async def disconnect(self, code):
        if self.rechecking is not None:
            self.rechecking.cancel()
        if self.team is not None:
            await get_relay().unwatch_team(self, team_id=self.team.id)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any other socket path: a documented close code instead of a server error."""

    async def connect(self):
        await self.accept()
        await self.close(code=protocol.CLOSE_NOT_FOUND)
