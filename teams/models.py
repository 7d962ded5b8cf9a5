"""Teams, the users who manage them, and the workers whose devices report positions."""

from django.conf import settings
from django.db import models


class Team(models.Model):
    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=200)
    # Users who may watch this team's live map ("managers" in the product's words).
    managers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="managed_teams", blank=True
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
