"""Team and worker writes: tokens are hashed, rotated and revoked; sockets are told after commit."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from teams import services, tokens
from teams.models import Enrolment, Worker
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


# ---------------------------------------------------------------- phone setup and enrolment links


def test_setup_issue_rotates_the_token_and_seals_it_in_a_one_time_link(
    world, closed_sockets, django_capture_on_commit_callbacks
):
    old = world.tokens[world.a1.id]
    with django_capture_on_commit_callbacks(execute=True):
        setup = services.worker_setup_issue(worker=world.a1)
    assert worker_get_by_token(token=old) is None
    assert worker_get_by_token(token=setup.token) == world.a1
    assert closed_sockets == [world.a1.id]  # the phone on the old token is told at once
    assert setup.token not in repr(setup) and setup.enrolment_code not in repr(setup)

    assert services.enrolment_redeem(code=setup.enrolment_code) == (world.a1, setup.token)
    assert services.enrolment_redeem(code=setup.enrolment_code) is None  # once only
    assert not Enrolment.objects.exists()


def test_the_database_holds_neither_the_code_nor_the_token(world):
    setup = services.worker_setup_issue(worker=world.a1)
    row = str(Enrolment.objects.values().get())
    assert setup.enrolment_code not in row and setup.token not in row
    enrolment = Enrolment.objects.get()
    assert enrolment.code_hash == tokens.enrolment_code_hash(setup.enrolment_code)
    # The token is sealed with the code: the stored hash of the code does not open it.
    assert tokens.token_unseal(enrolment.sealed_token, code=enrolment.code_hash) is None
    assert tokens.token_unseal(enrolment.sealed_token, code=setup.enrolment_code) == setup.token


def test_links_expire_after_the_configured_days(world, settings):
    settings.TEAMTRACK_ENROLMENT_DAYS = 3
    before = timezone.now()
    setup = services.worker_setup_issue(worker=world.a1)
    enrolment = Enrolment.objects.get()
    assert before + timedelta(days=3) <= enrolment.expires_at <= timezone.now() + timedelta(days=3)

    Enrolment.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.enrolment_redeem(code=setup.enrolment_code) is None
    assert not Enrolment.objects.exists()  # a dead link is gone, not kept


def test_a_new_setup_replaces_older_links_and_sweeps_expired_ones(world):
    first = services.worker_setup_issue(worker=world.a1)
    services.worker_setup_issue(worker=world.b1)
    Enrolment.objects.filter(worker=world.b1).update(expires_at=timezone.now())
    second = services.worker_setup_issue(worker=world.a1)
    assert services.enrolment_redeem(code=first.enrolment_code) is None
    assert list(Enrolment.objects.values_list("worker", flat=True)) == [world.a1.id]
    assert services.enrolment_redeem(code=second.enrolment_code) == (world.a1, second.token)


def test_revoking_or_rotating_the_token_kills_the_link(world):
    revoked = services.worker_setup_issue(worker=world.a1)
    services.worker_token_revoke(worker=world.a1)
    assert not world.a1.enrolments.exists()  # gone, not merely stale
    assert services.enrolment_redeem(code=revoked.enrolment_code) is None

    rotated = services.worker_setup_issue(worker=world.a2)
    services.worker_token_rotate(worker=world.a2)
    assert not world.a2.enrolments.exists()
    assert services.enrolment_redeem(code=rotated.enrolment_code) is None


def test_a_link_whose_token_changed_without_the_services_does_not_work(world):
    # Defence in depth: the unsealed token must still be the worker's, whatever wrote the row.
    setup = services.worker_setup_issue(worker=world.a1)
    Worker.objects.filter(pk=world.a1.pk).update(token_hash=tokens.token_hash("tt_other"))
    assert services.enrolment_redeem(code=setup.enrolment_code) is None


def test_an_inactive_workers_link_does_not_work(world):
    setup = services.worker_setup_issue(worker=world.a1)
    services.worker_update(worker=world.a1, name="Alice", active=False, team=world.alpha)
    assert services.enrolment_redeem(code=setup.enrolment_code) is None


def test_unknown_codes_redeem_nothing(world):
    services.worker_setup_issue(worker=world.a1)
    assert services.enrolment_redeem(code="") is None
    assert services.enrolment_redeem(code=tokens.enrolment_code_generate()) is None
    assert Enrolment.objects.count() == 1  # a wrong guess does not burn someone's link


def test_a_worker_can_be_created_without_a_token(world):
    worker, token = services.worker_create(team=world.alpha, name="Nia", with_token=False)
    assert token is None and worker.has_token is False
