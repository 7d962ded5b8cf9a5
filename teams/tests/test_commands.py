"""The operators' management commands."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from teams.models import Team
from teams.selectors import worker_get_by_token

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_addteam_creates_the_team_and_its_managers_with_unusable_passwords():
    run("addteam", "north", "--name", "North Crew", "--manager", "kim", "--manager", "lee")
    team = Team.objects.get(slug="north")
    assert team.name == "North Crew"
    assert sorted(team.managers.values_list("username", flat=True)) == ["kim", "lee"]
    assert not get_user_model().objects.get(username="kim").has_usable_password()


def test_addteam_with_password_and_again_on_an_existing_team():
    run("addteam", "north")
    output = run("addteam", "north", "--manager", "kim", "--password", "pw-kim-4567")
    assert "exists" in output
    assert get_user_model().objects.get(username="kim").check_password("pw-kim-4567")


def test_addteam_refuses_a_bad_slug():
    with pytest.raises(CommandError):
        run("addteam", "no spaces")


def test_addworker_prints_the_token_as_its_last_line():
    run("addteam", "north")
    token = run("addworker", "north", "Kai").strip().splitlines()[-1]
    worker = worker_get_by_token(token=token)
    assert worker.name == "Kai" and worker.team.slug == "north"


def test_addworker_needs_an_existing_team():
    with pytest.raises(CommandError):
        run("addworker", "nowhere", "Kai")


def test_addteam_refuses_a_password_the_validators_refuse():
    with pytest.raises(CommandError, match="Password refused"):
        run("addteam", "north", "--manager", "kim", "--password", "12345678")
    assert not get_user_model().objects.filter(username="kim").exists()
    run("addteam", "north", "--manager", "kim", "--password", "abc", "--skip-password-validation")
    assert get_user_model().objects.get(username="kim").check_password("abc")
