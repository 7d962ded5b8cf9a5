"""Create a team (or update its name) and give it managers."""

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from teams import selectors, services


class Command(BaseCommand):
    help = "Create a team and add managers to it (managers are created if missing)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="", help="display name (default: the slug)")
        parser.add_argument(
            "--manager", action="append", default=[], metavar="USERNAME", help="repeatable"
        )
        parser.add_argument(
            "--password",
            help="password to set for the managers (default: an unusable password for new users)",
        )
        parser.add_argument(
            "--skip-password-validation",
            action="store_true",
            help="set the password even if Django's password validators refuse it (tests)",
        )

    @transaction.atomic
    def handle(self, *args, slug, name, manager, password, skip_password_validation, **options):
        team = selectors.team_get_by_slug(slug=slug)
        if team is None:
            try:
                team = services.team_create(slug=slug, name=name)
            except ValidationError as error:
                raise CommandError(f"Cannot create team {slug!r}: {error}") from None
            self.stdout.write(f"Created team {team.slug} ({team.name}).")
        else:
            self.stdout.write(f"Team {team.slug} exists.")
        try:
            users = [
                services.manager_ensure(
                    username=username, password=password, validate=not skip_password_validation
                )
                for username in manager
            ]
        except ValidationError as error:
            raise CommandError(f"Password refused: {' '.join(error.messages)}") from None
        services.team_managers_add(team=team, users=users)
        for user in users:
            self.stdout.write(f"{user.username} manages {team.slug}.")
