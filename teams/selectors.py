"""Reads of teams and workers, for views, consumers and commands."""

from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib.auth import get_user
from django.db.models import QuerySet

from teams.models import ApiToken, Team, Worker
from teams.tokens import token_hash


def team_list_for_user(*, user) -> QuerySet[Team]:
    """Return the teams a user may watch: all for superusers, else the ones they manage."""
    if not user.is_authenticated or not user.is_active:
        return Team.objects.none()
    if user.is_superuser:
        return Team.objects.all()
    return user.managed_teams.all()


def team_get_by_slug(*, slug: str) -> Team | None:
    return Team.objects.filter(slug=slug).first()


def team_get_for_user(*, user, slug: str) -> Team | None:
    """Return the team with this slug if the user may watch it, else None: the API answers a
    team it may not see as it answers one that does not exist, so slugs do not leak."""
    return team_list_for_user(user=user).filter(slug=slug).first()


def team_can_watch(*, user, team: Team) -> bool:
    return team_list_for_user(user=user).filter(pk=team.pk).exists()


def watcher_still_allowed(*, session_key: str | None, user_id: int, team: Team) -> str | None:
    """Check again a manager who opened a map: None if their session still logs them in (not
    logged out, expired, or from before a password change) and they may still watch the team;
    else "logged_out" or "forbidden"."""
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = get_user(SimpleNamespace(session=session))  # Django's own checks, hash included
    if not user.is_authenticated or user.pk != user_id:
        return "logged_out"
    if not team_can_watch(user=user, team=team):
        return "forbidden"
    return None


def team_roster(*, team: Team) -> list[tuple[int, str]]:
    """Return (id, name) of the team's active workers, the ones a map shows."""
    return list(team.workers.filter(active=True).values_list("id", "name"))


def worker_list_for_team(*, team: Team) -> QuerySet[Worker]:
    """Return all the team's workers, active or not, for its workers page."""
    return team.workers.all()


def worker_get_for_team(*, team: Team, worker_id: int) -> Worker | None:
    """Return the team's worker with this id, or None (also when it is another team's)."""
    return team.workers.filter(pk=worker_id).first()


def worker_get_by_token(*, token: str) -> Worker | None:
    """Return the active worker that holds this device token, or None."""
    return (
        Worker.objects.select_related("team")
        .filter(token_hash=token_hash(token), active=True)
        .first()
    )


def api_token_list_for_user(*, user) -> QuerySet[ApiToken]:
    """Return the user's own API tokens, newest first (hashes only: the tokens are not kept)."""
    return ApiToken.objects.filter(user=user)


def api_token_get_active(*, token: str) -> ApiToken | None:
    """Return the API token with this value, with its user, or None (also when the user is
    inactive: deactivating a manager stops their scripts too)."""
    return (
        ApiToken.objects.select_related("user")
        .filter(token_hash=token_hash(token), user__is_active=True)
        .first()
    )


def user_for_api_token(*, token: str):
    """Return the active user an API token acts for, or None."""
    api_token = api_token_get_active(token=token)
    return api_token.user if api_token is not None else None
