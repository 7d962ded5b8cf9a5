"""Live sockets close as soon as their access ends, on every replica.

A manager's maps: logging out, a password change, being deactivated or deleted, or no longer
managing a team happen in Django's auth views and the admin site rather than in our services.
A worker's devices: a worker deleted any way at all (the admin, a team's deletion cascading, a
queryset in a shell or a data migration). So they are caught here, and the sockets are closed
after the change commits.
"""

from functools import partial

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.dispatch import receiver

from teams import selectors
from teams.models import Team, Worker
from teamtrack.control import close_manager_sockets, close_worker_sockets

User = get_user_model()


@receiver(user_logged_out, dispatch_uid="teams.close_maps_on_logout")
def close_maps_on_logout(sender, request, user, **kwargs):
    if user is not None:
        close_manager_sockets(user.pk)


@receiver(post_save, sender=User, dispatch_uid="teams.close_maps_of_inactive_users")
def close_maps_of_inactive_users(sender, instance, **kwargs):
    if not instance.is_active:
        transaction.on_commit(partial(close_manager_sockets, instance.pk))


@receiver(pre_save, sender=User, dispatch_uid="teams.close_maps_on_password_change")
def close_maps_on_password_change(sender, instance, update_fields=None, **kwargs):
    """Whoever changed the password may be shutting someone else out of the account."""
    if instance.pk is None or (update_fields is not None and "password" not in update_fields):
        return
    before = User.objects.filter(pk=instance.pk).values_list("password", flat=True).first()
    if before is not None and before != instance.password:
        transaction.on_commit(partial(close_manager_sockets, instance.pk))


@receiver(post_delete, sender=Worker, dispatch_uid="teams.close_sockets_of_deleted_workers")
def close_sockets_of_deleted_workers(sender, instance, **kwargs):
    transaction.on_commit(partial(close_worker_sockets, instance.pk))


@receiver(post_delete, sender=User, dispatch_uid="teams.close_maps_of_deleted_users")
def close_maps_of_deleted_users(sender, instance, **kwargs):
    transaction.on_commit(partial(close_manager_sockets, instance.pk))


@receiver(m2m_changed, sender=Team.managers.through, dispatch_uid="teams.close_maps_of_removed")
def close_maps_of_removed_managers(sender, instance, action, reverse, pk_set, **kwargs):
    """Close the maps of users taken off a team's managers, from either side of the relation."""
    if action not in ("pre_clear", "post_remove"):
        return
    if action == "pre_clear":  # the cleared ids are known only before the clear
        related = instance.managed_teams if reverse else instance.managers
        pk_set = set(related.values_list("pk", flat=True))
    if reverse:
        pairs = [(instance.pk, team_id) for team_id in pk_set]
    else:
        pairs = [(user_id, instance.pk) for user_id in pk_set]
    transaction.on_commit(partial(_close_if_no_longer_allowed, pairs))


def _close_if_no_longer_allowed(pairs: list[tuple[int, int]]) -> None:
    for user_id, team_id in pairs:
        user = User.objects.filter(pk=user_id).first()
        team = Team.objects.filter(pk=team_id).first()
        if user is None or team is None:
            continue  # deleted: its own signal closes what it must
        if not selectors.team_can_watch(user=user, team=team):  # superusers still may
            close_manager_sockets(user_id, team_id=team_id)
