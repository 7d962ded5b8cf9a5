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


class ApiToken(models.Model):
    """A manager's personal token for the history API (tracking/api/): it acts as its user,
    seeing what they see. Like a device token, only its SHA-256 is kept; the token itself is
    shown once, when it is created."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100, help_text="What it is for, to tell tokens apart.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Updated at most once a minute (tracking/api/authentication.py): a script polling every
    # second must not write a row a second.
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return self.name
