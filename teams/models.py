"""Teams, the users who manage them, the workers whose devices report positions, and the
one-time links that enrol a worker's browser."""

from django.conf import settings
from django.db import models
from django.utils import timezone


class Team(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    # Users who may watch this team's live map ("managers" in the product's words).
    managers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="managed_teams", blank=True
    )
    teammates_in_apps = models.BooleanField(
        default=False,
        help_text="OwnTracks: answer each upload with teammates' latest positions, so workers "
        "see each other in the app.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class Worker(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="workers")
    name = models.CharField(max_length=200)
    active = models.BooleanField(default=True)
    # SHA-256 of the device token; the token itself is shown once and never stored.
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True, editable=False)
    token_issued_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self):
        return self.name

    @property
    def has_token(self) -> bool:
        return self.token_hash is not None


class Enrolment(models.Model):
    """A one-time link that hands a worker's device token to a browser.

    The link carries a random code; the row keeps only a hash of it (to find the row) and the
    token sealed with a key derived from it (see teams/tokens.py), so neither the code nor the
    token can be read from the database.
    """

    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="enrolments")
    code_hash = models.CharField(max_length=64, unique=True)
    sealed_token = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()

    def __str__(self):
        return f"Enrolment of {self.worker} until {self.expires_at:%Y-%m-%d %H:%M}"
