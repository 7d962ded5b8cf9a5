"""Team and worker writes: tokens are hashed, rotated and revoked; sockets are told after commit."""

import pytest
from django.core.exceptions import ValidationError

from teams import services, tokens
from teams.models import Worker
from teams.selectors import team_list_for_user, worker_get_by_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def closed_sockets(monkeypatch):
    """Record which workers' sockets the services asked to close."""
    closed = []
    monkeypatch.setattr(services, "close_worker_sockets", closed.append)
    return closed


def test_worker_token_is_long_random_and_stored_only_as_a_hash(world):
    token = world.tokens[world.a1.id]
    assert token.startswith("tt_") and len(token) >= 40
    stored = Worker.objects.get(pk=world.a1.pk)
    assert stored.token_hash == tokens.token_hash(token)
    assert token not in str(Worker.objects.filter(pk=world.a1.pk).values().get())
    assert worker_get_by_token(token=token) == world.a1


def test_rotate_replaces_the_token_and_closes_sockets_after_commit(
    world, closed_sockets, django_capture_on_commit_callbacks
):
    old = world.tokens[world.a1.id]
    with django_capture_on_commit_callbacks(execute=True):
        new = services.worker_token_rotate(worker=world.a1)
        assert closed_sockets == []  # not before the commit
    assert new != old
    assert worker_get_by_token(token=old) is None
    assert worker_get_by_token(token=new) == world.a1
    assert closed_sockets == [world.a1.id]


def test_revoke_withdraws_the_token_and_closes_sockets(
    world, closed_sockets, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.worker_token_revoke(worker=world.a1)
    assert worker_get_by_token(token=world.tokens[world.a1.id]) is None
    assert Worker.objects.get(pk=world.a1.pk).has_token is False
    assert closed_sockets == [world.a1.id]


def test_deactivating_or_moving_a_worker_closes_its_sockets_renaming_does_not(
    world, closed_sockets, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        services.worker_update(worker=world.a1, name="Alicia", active=True, team=world.alpha)
    assert closed_sockets == []
    with django_capture_on_commit_callbacks(execute=True):
        services.worker_update(worker=world.a1, name="Alicia", active=True, team=world.bravo)
    with django_capture_on_commit_callbacks(execute=True):
        services.worker_update(worker=world.a2, name="Arno", active=False, team=world.alpha)
    assert closed_sockets == [world.a1.id, world.a2.id]
    assert worker_get_by_token(token=world.tokens[world.a2.id]) is None


def test_team_slug_is_validated(world):
    with pytest.raises(ValidationError):
        services.team_create(slug="not a slug")


def test_manager_ensure_sets_an_unusable_password_unless_given(db):
    quiet = services.manager_ensure(username="quiet")
    assert not quiet.has_usable_password()
    loud = services.manager_ensure(username="loud", password="s3cret-pass")
    assert loud.check_password("s3cret-pass")


def test_managers_see_only_their_teams_and_superusers_all(world):
    assert list(team_list_for_user(user=world.ann)) == [world.alpha]
    assert list(team_list_for_user(user=world.bob)) == [world.bravo]
    assert set(team_list_for_user(user=world.root)) == {world.alpha, world.bravo}
