"""Delete stored positions older than the history's retention (HISTORY_RETENTION_DAYS), in
small batches, so that the live writer's inserts never wait long behind it. Run it daily (cron
or a Kubernetes CronJob: docs/operations.md, "History retention")."""

import math
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from teams.models import Team
from tracking.models import StoredPosition

DAY = 86_400.0


def positions_prune(*, before: float, batch_size: int) -> int:
    """Delete every stored position with ts before `before`; return how many went.

    Team by team, the oldest `batch_size` ids are read on the (team, ts) index, then deleted by
    primary key, each batch in a transaction of its own: a batch holds its row locks for one
    short DELETE, and the writer's inserts (new rows, other pages) never wait on them. Running
    it again deletes nothing more; stopping it halfway loses nothing it has not deleted."""
    deleted = 0
    for team_id in Team.objects.order_by("id").values_list("id", flat=True):
        old = StoredPosition.objects.filter(team_id=team_id, ts__lt=before).order_by("ts")
        after = None
        while True:
            # From the last batch's ts on: the index entries of rows just deleted stay until
            # vacuum, and each batch would walk over all of them again.
            batch = old if after is None else old.filter(ts__gte=after)
            rows = list(batch.values_list("id", "ts")[:batch_size])
            if not rows:
                break
            with transaction.atomic():
                # No model points at StoredPosition and it has no signals: one DELETE by ids.
                count, _ = StoredPosition.objects.filter(id__in=[pk for pk, _ in rows]).delete()
            deleted += count
            after = rows[-1][1]
    return deleted


class Command(BaseCommand):
    help = (
        "Delete stored positions older than HISTORY_RETENTION_DAYS (or --days), in batches of "
        "--batch-size, each its own short transaction. Safe to run again and beside the live "
        "writer."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--days",
            type=float,
            help="keep this many days (default: HISTORY_RETENTION_DAYS, "
            f"{settings.TEAMTRACK_HISTORY_RETENTION_DAYS})",
        )
        parser.add_argument("--batch-size", type=int, default=5_000, help="rows a batch (5000)")

    def handle(self, *args, days, batch_size, **options):
        days = settings.TEAMTRACK_HISTORY_RETENTION_DAYS if days is None else days
        # Not NaN: `ts < NaN` is true of every row on PostgreSQL, which would delete them all.
        if not math.isfinite(days) or days <= 0 or batch_size < 1:
            raise CommandError("--days must be a number above 0 and --batch-size at least 1")
        before = time.time() - days * DAY
        deleted = positions_prune(before=before, batch_size=batch_size)
        self.stdout.write(f"Deleted {deleted} positions older than {days:g} days.")
