"""WebSocket consumers: authenticate, validate, and hand everything else to the relay.

WorkerConsumer serves a worker's device on /ws/worker/; TeamConsumer serves a manager's map on
/ws/teams/<slug>/. docs/protocol.md describes both.
"""

import asyncio

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from teams import selectors
from tracking import protocol
from tracking.protocol import ClientError
from tracking.relay import get_relay, team_group, worker_group


def bearer_token(scope) -> str | None:
    """Return the token of an `Authorization: Bearer` header, if the handshake carried one."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class WorkerConsumer(AsyncWebsocketConsumer):
    worker = None  # set once the device's token is accepted
    auth_timer = None

    async def connect(self):
        await self.accept()
        token = bearer_token(self.scope)
        if token is not None:
            await self.authenticate(token)
        else:
            # Browsers cannot set headers: they get AUTH_TIMEOUT to send an auth frame.
            self.auth_timer = asyncio.get_running_loop().call_later(
                protocol.AUTH_TIMEOUT, lambda: asyncio.ensure_future(self.refuse())
            )

    async def receive(self, text_data=None, bytes_data=None):
        try:
            frame = protocol.parse_worker_frame(text_data, bytes_data)
        except ClientError as error:
            if self.worker is None:
                await self.refuse()
            else:
                await self.send_error(error)
            return
        if isinstance(frame, protocol.AuthFrame):
            if self.worker is None:
                await self.authenticate(frame.token)
            else:
                await self.send_error(ClientError("invalid_frame", "already authenticated"))
        elif self.worker is None:
            await self.refuse()
        else:
            get_relay().positions_received(
                team_id=self.worker.team_id, worker_id=self.worker.id, positions=frame.positions
            )

    async def disconnect(self, code):
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        if self.worker is not None:
            await self.channel_layer.group_discard(worker_group(self.worker.id), self.channel_name)
            await get_relay().worker_disconnected(
                team_id=self.worker.team_id, worker_id=self.worker.id
            )

    async def authenticate(self, token: str):
        if self.auth_timer is not None:
            self.auth_timer.cancel()
        worker = await database_sync_to_async(selectors.worker_get_by_token)(token=token)
        if worker is None:
            await self.refuse()
            return
        self.worker = worker
        await self.channel_layer.group_add(worker_group(worker.id), self.channel_name)
        await get_relay().worker_connected(
            team_id=worker.team_id, worker_id=worker.id, name=worker.name
        )

    async def refuse(self):
        await self.close(code=protocol.CLOSE_UNAUTHENTICATED)

    async def send_error(self, error: ClientError):
        await self.send(text_data=protocol.encode_error(error.code, error.detail))

    # Channel-layer handlers

    async def worker_revoked(self, event):
        await self.refuse()


class TeamConsumer(AsyncWebsocketConsumer):
    team = None

    async def connect(self):
        await self.accept()
        user = self.scope["user"]
        if not user.is_authenticated:
            await self.close(code=protocol.CLOSE_UNAUTHENTICATED)
            return
        slug = self.scope["url_route"]["kwargs"]["slug"]
        team = await database_sync_to_async(selectors.team_get_by_slug)(slug=slug)
        if team is None:
            await self.close(code=protocol.CLOSE_NOT_FOUND)
            return
        if not await database_sync_to_async(selectors.team_can_watch)(user=user, team=team):
            await self.close(code=protocol.CLOSE_FORBIDDEN)
            return
        self.team = team
        # Join before taking the snapshot, so that nothing sent in between is missed.
        await self.channel_layer.group_add(team_group(team.id), self.channel_name)
        roster = await database_sync_to_async(selectors.team_roster)(team=team)
        await self.send(
            text_data=await get_relay().snapshot(
                team_id=team.id, team_slug=team.slug, roster=roster
            )
        )

    async def receive(self, text_data=None, bytes_data=None):
        error = ClientError("invalid_frame", "this socket only sends; it takes no frames")
        await self.send(text_data=protocol.encode_error(error.code, error.detail))

    async def disconnect(self, code):
        if self.team is not None:
            await self.channel_layer.group_discard(team_group(self.team.id), self.channel_name)

    # Channel-layer handlers: the relay sends frames already encoded, once for all managers.

    async def positions_batch(self, event):
        await self.send(text_data=event["text"])

    async def presence_changed(self, event):
        await self.send(text_data=event["text"])


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any other socket path: a documented close code instead of a server error."""

    async def connect(self):
        await self.accept()
        await self.close(code=protocol.CLOSE_NOT_FOUND)
