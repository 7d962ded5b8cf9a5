"""The history: every position a device sent and TeamTrack accepted, kept for
HISTORY_RETENTION_DAYS. The live feed's last-known state lives in Redis (tracking.state); this
table is what "where were they at ten" and the exports read."""

from django.db import models

from teams.models import Team, Worker


class StoredPosition(models.Model):
    """One accepted position of a worker, as its device sent it.

    `team` is the worker's team when the position was taken, so a worker moved to another team
    takes none of its old team's history with it. `ts` is the device's own Unix time in seconds,
    the number the live feed carries: with the worker it is the position's identity, so a
    resend is stored once.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+", db_index=False)
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="+", db_index=False)
    ts = models.FloatField()
    lat = models.FloatField()
    lng = models.FloatField()
    acc = models.FloatField(null=True, blank=True)  # metres
    speed = models.FloatField(null=True, blank=True)  # metres a second
    heading = models.FloatField(null=True, blank=True)  # degrees from north
    alt = models.FloatField(null=True, blank=True)  # metres above sea level
    batt = models.FloatField(null=True, blank=True)  # percent

    class Meta:
        constraints = [
            # A worker's track reads this index; a resend is stored once.
            models.UniqueConstraint(fields=["worker", "ts"], name="position_once_per_worker_ts"),
        ]
        indexes = [
            # A team's moment ("where was everyone at ten"), its exports and the retention.
            models.Index(fields=["team", "ts"], name="position_team_ts"),
        ]

    def __str__(self):
        return f"worker {self.worker_id} at {self.ts}"
