"""An open map checks its session again every SESSION_RECHECK_SECONDS: a session that ended in a
way no signal reports closes the map (4401), as does losing the team (4403)."""

from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.contrib.sessions.models import Session
from django.utils import timezone

from tracking import protocol

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(30)]


@pytest.fixture(autouse=True)
def recheck_often(settings):
    settings.TEAMTRACK_SESSION_RECHECK_SECONDS = 0.2


async def open_map(world, open_manager, user: str = "ann"):
    manager = await open_manager("alpha", world.cookies[user])
    await manager.receive_type("snapshot")
    return manager


async def test_a_map_whose_session_is_still_good_stays_open(world, open_manager):
    manager = await open_map(world, open_manager)
    assert await manager.nothing(1.0)


async def test_a_session_deleted_from_the_database_closes_its_maps(world, open_manager):
    manager = await open_map(world, open_manager)
    other = await open_map(world, open_manager, "root")
    # As `clearsessions`, a shell or a data migration would: no signal says so.
    await sync_to_async(Session.objects.filter(session_key=world.cookies["ann"]).delete)()
    assert await manager.closed_with(timeout=3) == protocol.CLOSE_UNAUTHENTICATED
    assert await other.nothing(0.5)


async def test_an_expired_session_closes_its_maps(world, open_manager):
    manager = await open_map(world, open_manager)
    expired = timezone.now() - timedelta(seconds=1)
    await sync_to_async(Session.objects.filter(session_key=world.cookies["ann"]).update)(
        expire_date=expired
    )
    assert await manager.closed_with(timeout=3) == protocol.CLOSE_UNAUTHENTICATED


async def test_a_manager_taken_off_the_team_without_a_signal_is_closed_4403(world, open_manager):
    manager = await open_map(world, open_manager)
    managers = world.alpha.managers.through.objects  # a bulk delete sends no m2m_changed
    await sync_to_async(managers.filter(user=world.ann).delete)()
    assert await manager.closed_with(timeout=3) == protocol.CLOSE_FORBIDDEN
