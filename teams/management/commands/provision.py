"""Create numbered teams, managers and workers in bulk for load tests; write their tokens as JSON."""

import json

from django.core.management.base import BaseCommand
from django.db import transaction

from teams import services


class Command(BaseCommand):
    help = (
        "Create teams load-1..N, each with managers and workers; print (or write) JSON with "
        "the slugs, manager logins and device tokens. For load tests and end-to-end tests."
    )

    def add_arguments(self, parser):
        parser.add_argument("--teams", type=int, default=1)
        parser.add_argument("--workers", type=int, default=10, help="workers per team")
        parser.add_argument("--managers", type=int, default=1, help="managers per team")
        parser.add_argument("--prefix", default="load", help="team slugs are PREFIX-1, PREFIX-2, …")
        parser.add_argument("--password", required=True, help="password of every manager")
        parser.add_argument("--output", help="write the JSON here instead of printing it")

    @transaction.atomic
    def handle(self, *args, teams, workers, managers, prefix, password, output, **options):
        result = {"teams": []}
        for team_number in range(1, teams + 1):
            slug = f"{prefix}-{team_number}"
            team = services.team_create(slug=slug, name=f"Load team {team_number}")
            usernames = [f"{slug}-manager-{n}" for n in range(1, managers + 1)]
            users = [services.manager_ensure(username=u, password=password) for u in usernames]
            services.team_managers_add(team=team, users=users)
            members = []
            for worker_number in range(1, workers + 1):
                worker, token = services.worker_create(
                    team=team, name=f"{slug} worker {worker_number}"
                )
                members.append({"id": worker.id, "name": worker.name, "token": token})
            result["teams"].append(
                {"id": team.id, "slug": slug, "managers": usernames, "workers": members}
            )
        text = json.dumps(result, indent=1)
        if output:
            with open(output, "w") as file:
                file.write(text)
            self.stdout.write(f"Wrote {teams} teams with {workers} workers each to {output}.")
        else:
            self.stdout.write(text)
