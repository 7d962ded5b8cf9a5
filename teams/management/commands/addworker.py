"""Create a worker and print its device token as the last line (for scripts)."""

from django.core.management.base import BaseCommand, CommandError

from teams import selectors, services


class Command(BaseCommand):
    help = "Create a worker in a team; the last line printed is its device token (shown only now)."

    def add_arguments(self, parser):
        parser.add_argument("team_slug")
        parser.add_argument("name")

    def handle(self, *args, team_slug, name, **options):
        team = selectors.team_get_by_slug(slug=team_slug)
        if team is None:
            raise CommandError(f"No team {team_slug!r}; create it with addteam first.")
        worker, token = services.worker_create(team=team, name=name)
        self.stdout.write(
            f"Created worker {worker.name} (id {worker.id}) in {team.slug}. Device token:"
        )
        self.stdout.write(token)
