"""Writes to teams, managers and workers. Socket effects are sent after the transaction commits."""

from functools import partial

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from teams.models import Team, Worker
from teams.tokens import token_generate, token_hash
from teamtrack.control import close_worker_sockets


@transaction.atomic
def team_create(*, slug: str, name: str = "") -> Team:
    team = Team(slug=slug, name=name or slug)
    team.full_clean()
    team.save()
    return team


@transaction.atomic
def manager_ensure(*, username: str, password: str | None = None):
    """Return the user with this username, created if missing (unusable password unless given)."""
    user, created = get_user_model().objects.get_or_create(username=username)
    if password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])
    elif created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


@transaction.atomic
def team_managers_add(*, team: Team, users) -> None:
    team.managers.add(*users)


@transaction.atomic
def worker_create(*, team: Team, name: str) -> tuple[Worker, str]:
    """Create a worker with a fresh device token; return both (the token is shown only now)."""
    worker = Worker(team=team, name=name)
    token = _token_issue(worker)
    worker.full_clean()
    worker.save()
    return worker, token


@transaction.atomic
def worker_token_rotate(*, worker: Worker) -> str:
    """Issue a new token; the old one stops working and its open sockets are closed."""
    token = _token_issue(worker)
    worker.save(update_fields=["token_hash", "token_issued_at"])
    _close_sockets_on_commit(worker)
    return token


@transaction.atomic
def worker_token_revoke(*, worker: Worker) -> None:
    """Withdraw the token; the worker's open sockets are closed."""
    worker.token_hash = None
    worker.token_issued_at = None
    worker.save(update_fields=["token_hash", "token_issued_at"])
    _close_sockets_on_commit(worker)


@transaction.atomic
def worker_update(*, worker: Worker, name: str, active: bool, team: Team) -> Worker:
    """Change a worker; deactivating it or moving it to another team closes its sockets."""
    previous = Worker.objects.select_for_update().get(pk=worker.pk)
    reconnect = (previous.active and not active) or previous.team_id != team.pk
    worker.name, worker.active, worker.team = name, active, team
    worker.full_clean()
    worker.save()
    if reconnect:
        _close_sockets_on_commit(worker)
    return worker


@transaction.atomic
def worker_delete(*, worker: Worker) -> None:
    _close_sockets_on_commit(worker)
    worker.delete()


def _token_issue(worker: Worker) -> str:
    token = token_generate()
    worker.token_hash = token_hash(token)
    worker.token_issued_at = timezone.now()
    return token


def _close_sockets_on_commit(worker: Worker) -> None:
    transaction.on_commit(partial(close_worker_sockets, worker.pk))
