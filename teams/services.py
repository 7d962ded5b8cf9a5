"""Writes to teams, managers, workers and enrolment links. Socket effects are sent after the
transaction commits."""

import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.utils import timezone

from teams.models import ApiToken, Enrolment, Team, Worker
from teams.tokens import (
    enrolment_code_generate,
    enrolment_code_hash,
    token_generate,
    token_hash,
    token_seal,
    token_unseal,
)
from teamtrack.control import close_worker_sockets


@transaction.atomic
def team_create(*, slug: str, name: str = "") -> Team:
    team = Team(slug=slug, name=name or slug)
    team.full_clean()
    team.save()
    return team


@transaction.atomic
def manager_ensure(*, username: str, password: str | None = None, validate: bool = False):
    """Return the user with this username, created if missing (unusable password unless given).
    With `validate`, a password Django's validators refuse raises ValidationError."""
    user, created = get_user_model().objects.get_or_create(username=username)
    if password is not None:
        if validate:
            validate_password(password, user)
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
def worker_create(
    *, team: Team, name: str, with_token: bool = True, actor=None
) -> tuple[Worker, str | None]:
    """Create a worker with a fresh device token; return both (the token is shown only now).

    Without a token (`with_token=False`) the worker waits for its phone setup to issue one.
    `actor`, the user who will see the token, is written to the admin log."""
    worker = Worker(team=team, name=name)
    token = _token_issue(worker) if with_token else None
    worker.full_clean()
    worker.save()
    if token is not None:
        _audit(actor, worker, "Created with a device token, shown once")
    return worker, token


@transaction.atomic
def worker_token_rotate(*, worker: Worker, actor=None) -> str:
    """Issue a new token; the old one and its enrolment links stop working, and its open sockets
    are closed. `actor`, the user who will see the token, is written to the admin log."""
    token = _token_issue(worker)
    worker.save(update_fields=["token_hash", "token_issued_at"])
    worker.enrolments.all().delete()
    _close_sockets_on_commit(worker)
    _audit(actor, worker, "Issued a new device token, shown once; the old one stopped working")
    return token


@transaction.atomic
def worker_token_revoke(*, worker: Worker, actor=None) -> None:
    """Withdraw the token and its enrolment links; the worker's open sockets are closed."""
    worker.token_hash = None
    worker.token_issued_at = None
    worker.save(update_fields=["token_hash", "token_issued_at"])
    worker.enrolments.all().delete()
    _close_sockets_on_commit(worker)
    _audit(actor, worker, "Revoked the device token")


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
    """Delete a worker; its open sockets are closed (teams.signals, whatever deletes it)."""
    worker.delete()


@dataclass(frozen=True)
class PhoneSetup:
    """What a phone needs, shown once: the device token and the one-time enrolment code."""

    # Kept out of repr: a setup that reaches a log or a traceback must not leak its secrets.
    token: str = field(repr=False)
    enrolment_code: str = field(repr=False)


@transaction.atomic
def worker_setup_issue(*, worker: Worker, actor=None) -> PhoneSetup:
    """Replace the worker's token and open one enrolment link for it (older links stop).
    `actor`, the user who will see both, is written to the admin log."""
    token = worker_token_rotate(worker=worker)  # also deletes the worker's older links
    _audit(actor, worker, "Issued a phone setup: a new device token and enrolment link, shown once")
    code = enrolment_code_generate()
    now = timezone.now()
    Enrolment.objects.filter(expires_at__lte=now).delete()  # nobody can use them any more
    enrolment = Enrolment(
        worker=worker,
        code_hash=enrolment_code_hash(code),
        sealed_token=token_seal(token, code=code),
        created_at=now,
        expires_at=now + timedelta(days=settings.TEAMTRACK_ENROLMENT_DAYS),
    )
    enrolment.full_clean()
    enrolment.save()
    return PhoneSetup(token=token, enrolment_code=code)


@transaction.atomic
def enrolment_redeem(*, code: str) -> tuple[Worker, str] | None:
    """Use an enrolment link once: return its worker and device token, or None if it is
    unknown, expired, or its worker is inactive or holds another token by now."""
    if not code.isascii():  # codes are URL-safe base64; anything else cannot be one
        return None
    enrolment = (
        Enrolment.objects.select_for_update(of=("self",))
        .select_related("worker__team")
        .filter(code_hash=enrolment_code_hash(code))
        .first()
    )
    if enrolment is None:
        return None
    # Used or dead, a link never works again: delete it either way.
    enrolment.delete()
    worker = enrolment.worker
    token = token_unseal(enrolment.sealed_token, code=code)
    if (
        enrolment.expires_at <= timezone.now()
        or not worker.active
        or token is None
        or token_hash(token) != worker.token_hash
    ):
        return None
    return worker, token


def _token_issue(worker: Worker) -> str:
    token = token_generate()
    worker.token_hash = token_hash(token)
    worker.token_issued_at = timezone.now()
    return token


def _audit(actor, worker: Worker, message: str) -> None:
    """Write who saw or withdrew a worker's credential, and when, to the admin log."""
    if actor is not None:
        LogEntry.objects.log_actions(
            user_id=actor.pk, queryset=[worker], action_flag=CHANGE, change_message=message
        )


def _close_sockets_on_commit(worker: Worker) -> None:
    transaction.on_commit(partial(close_worker_sockets, worker.pk))


# ---------------------------------------------------------------- personal API tokens

# Not the device tokens' "tt_": a token found in a paste or a repository says at once whether it
# opens a manager's history (revoke it on /account/api-tokens/) or a worker's device.
API_TOKEN_PREFIX = "tta_"
# How stale last_used_at may be: the API writes it at most once a minute per token.
API_TOKEN_TOUCH_INTERVAL = timedelta(minutes=1)


@transaction.atomic
def api_token_create(*, user, name: str) -> tuple[ApiToken, str]:
    """Create a personal API token for `user`; return it and the token string, which is shown
    only now (only its hash is kept)."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    api_token = ApiToken(user=user, name=name.strip(), token_hash=token_hash(token))
    api_token.full_clean()
    api_token.save()
    return api_token, token


@transaction.atomic
def api_token_revoke(*, user, token_id: int) -> bool:
    """Delete one of `user`'s own tokens; False when they hold none with this id (another
    user's token is left alone, and looks the same as a missing one)."""
    deleted, _ = ApiToken.objects.filter(user=user, pk=token_id).delete()
    return deleted > 0


def api_token_touch(*, api_token: ApiToken, now: datetime | None = None) -> None:
    """Record that the token was used, unless that was recorded less than a minute ago."""
    now = now or timezone.now()
    last = api_token.last_used_at
    if last is None or now - last >= API_TOKEN_TOUCH_INTERVAL:
        ApiToken.objects.filter(pk=api_token.pk).update(last_used_at=now)
        api_token.last_used_at = now
