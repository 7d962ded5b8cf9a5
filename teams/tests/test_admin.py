"""The admin creates workers and rotates or revokes tokens, showing a new token exactly once."""

import re

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission

from teams.models import Worker
from teams.selectors import worker_get_by_token

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client, world):
    client.force_login(world.root)
    return client


def shown_tokens(response) -> list[str]:
    return re.findall(r'<code class="device-token">([^<]+)</code>', response.content.decode())


def test_adding_a_worker_shows_its_token_once(admin, world):
    response = admin.post(
        "/admin/teams/worker/add/", {"team": world.alpha.pk, "name": "Nia", "active": "on"}
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    (token,) = shown_tokens(response)
    worker = worker_get_by_token(token=token)
    assert worker.name == "Nia"
    page = admin.get(f"/admin/teams/worker/{worker.pk}/change/").content.decode()
    assert token not in page
    assert token not in str(admin.session.items())


def test_rotate_action_shows_new_tokens_and_old_ones_stop_working(admin, world):
    response = admin.post(
        "/admin/teams/worker/",
        {"action": "rotate_tokens", "_selected_action": [world.a1.pk, world.a2.pk]},
    )
    tokens = shown_tokens(response)
    assert len(tokens) == 2
    assert {worker_get_by_token(token=t) for t in tokens} == {world.a1, world.a2}
    assert worker_get_by_token(token=world.tokens[world.a1.id]) is None


def test_revoke_action(admin, world):
    admin.post(
        "/admin/teams/worker/", {"action": "revoke_tokens", "_selected_action": [world.b1.pk]}
    )
    assert Worker.objects.get(pk=world.b1.pk).has_token is False


def test_team_admin_assigns_managers(admin, world):
    response = admin.post(
        f"/admin/teams/team/{world.alpha.pk}/change/",
        {
            "slug": "alpha",
            "name": "Alpha",
            "managers": [world.ann.pk, world.bob.pk],
            "workers-TOTAL_FORMS": "2",
            "workers-INITIAL_FORMS": "2",
            "workers-0-id": world.a1.pk,
            "workers-0-team": world.alpha.pk,
            "workers-1-id": world.a2.pk,
            "workers-1-team": world.alpha.pk,
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert set(world.alpha.managers.all()) == {world.ann, world.bob}


def test_workers_link_their_phone_setup_from_the_list_and_the_change_page(admin, world):
    setup = f"/teams/bravo/workers/{world.b1.pk}/setup/"
    assert (
        f'<a href="{setup}">Set up a phone</a>'
        in admin.get("/admin/teams/worker/").content.decode()
    )
    page = admin.get(f"/admin/teams/worker/{world.b1.pk}/change/").content.decode()
    assert f'<a href="{setup}">Set up a phone</a>' in page
    assert "History" in page  # the admin's own tools are still there
    assert admin.post(setup).status_code == 200  # a superuser may set up any team's phone


def test_team_admin_shows_and_saves_teammates_in_apps(admin, world):
    page = admin.get(f"/admin/teams/team/{world.alpha.pk}/change/").content.decode()
    assert 'name="teammates_in_apps"' in page
    admin.post(
        f"/admin/teams/team/{world.alpha.pk}/change/",
        {
            "slug": "alpha",
            "name": "Alpha",
            "teammates_in_apps": "on",
            "workers-TOTAL_FORMS": "2",
            "workers-INITIAL_FORMS": "2",
            "workers-0-id": world.a1.pk,
            "workers-0-team": world.alpha.pk,
            "workers-1-id": world.a2.pk,
            "workers-1-team": world.alpha.pk,
        },
    )
    world.alpha.refresh_from_db()
    assert world.alpha.teammates_in_apps is True


@pytest.fixture
def viewer(client, world, django_user_model):
    """Staff who may only view workers."""
    user = django_user_model.objects.create_user("vic", password="pw-vic-123", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_worker"))
    client.force_login(user)
    return client


@pytest.mark.parametrize("action", ["rotate_tokens", "revoke_tokens"])
def test_staff_who_may_only_view_workers_cannot_touch_tokens(viewer, world, action):
    response = viewer.post(
        "/admin/teams/worker/", {"action": action, "_selected_action": [world.a1.pk]}
    )
    assert not shown_tokens(response)
    assert worker_get_by_token(token=world.tokens[world.a1.id]) == world.a1, "the token changed"
    page = viewer.get("/admin/teams/worker/").content.decode()
    assert "rotate_tokens" not in page and "revoke_tokens" not in page


def test_every_token_issue_display_and_revocation_is_in_the_admin_log(admin, client, world):
    admin.post(
        "/admin/teams/worker/", {"action": "rotate_tokens", "_selected_action": [world.a1.pk]}
    )
    admin.post(
        "/admin/teams/worker/", {"action": "revoke_tokens", "_selected_action": [world.a2.pk]}
    )
    admin.post("/admin/teams/worker/add/", {"team": world.alpha.pk, "name": "Nia", "active": "on"})
    client.force_login(world.ann)
    client.post(f"/teams/alpha/workers/{world.a1.pk}/setup/")
    entries = [
        (entry.user.username, entry.object_repr, entry.change_message)
        for entry in LogEntry.objects.order_by("pk")
        if "token" in entry.change_message
    ]
    assert entries == [
        ("root", "Alice", "Issued a new device token, shown once; the old one stopped working"),
        ("root", "Arno", "Revoked the device token"),
        ("root", "Nia", "Created with a device token, shown once"),
        (
            "ann",
            "Alice",
            "Issued a phone setup: a new device token and enrolment link, shown once",
        ),
    ]
