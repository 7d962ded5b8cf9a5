"""The retention command (tracking/management/commands/prune_history.py): it deletes exactly
the positions older than the retention, of every team, in batches, and again deletes nothing."""

import re
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tracking.models import StoredPosition

pytestmark = pytest.mark.django_db

DAY = 86_400


def prune(*args) -> str:
    out = StringIO()
    call_command("prune_history", *args, stdout=out)
    return out.getvalue()


def fill(world, ages_in_days):
    """A position of each worker (both teams) at each age, counted back from now."""
    now = time.time()
    StoredPosition.objects.bulk_create(
        StoredPosition(team=worker.team, worker=worker, ts=now - age * DAY, lat=1.0, lng=2.0)
        for worker in (world.a1, world.a2, world.b1)
        for age in ages_in_days
    )


def ages(worker) -> list[int]:
    now = time.time()
    rows = StoredPosition.objects.filter(worker=worker).order_by("ts")
    return [round((now - ts) / DAY) for ts in rows.values_list("ts", flat=True)]


def test_positions_older_than_the_retention_go_and_the_rest_stay(world, settings):
    settings.TEAMTRACK_HISTORY_RETENTION_DAYS = 90
    fill(world, [200, 91, 89, 1, 0])
    assert prune() == "Deleted 6 positions older than 90 days.\n"
    for worker in (world.a1, world.a2, world.b1):
        assert ages(worker) == [89, 1, 0]
    assert prune() == "Deleted 0 positions older than 90 days.\n"  # idempotent


def test_days_overrides_the_setting_and_batches_are_short_transactions(world):
    fill(world, [10, 9, 8, 7, 6, 5, 2])
    with CaptureQueriesContext(connection) as queries:
        assert prune("--days", "3", "--batch-size", "4") == (
            "Deleted 18 positions older than 3 days.\n"
        )
    deletes = [q["sql"] for q in queries if q["sql"].startswith("DELETE")]
    # Alpha's 12 old positions in 3 batches of 4, bravo's 6 in 2 (4 and 2): no DELETE holds more.
    assert len(deletes) == 5
    batches = [len(re.search(r"IN \(([^)]*)\)", sql).group(1).split(",")) for sql in deletes]
    assert batches == [4, 4, 4, 4, 2]
    assert [ages(w) for w in (world.a1, world.a2, world.b1)] == [[2]] * 3


def test_bad_options_are_refused(world):
    with pytest.raises(CommandError):
        prune("--days", "0")
    with pytest.raises(CommandError):
        prune("--batch-size", "0")
