"""Set up a demo team with simulated couriers and serve the app, so the map moves at once."""

import asyncio
import secrets
import threading

from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.db import transaction

from teams import selectors, services
from tracking.simulator import run_fleet

DEMO_TEAM = "demo"
DEMO_MANAGER = "demo"


class Command(BaseCommand):
    help = "Migrate, create a demo team with a manager and simulated workers, and serve the app."

    def add_arguments(self, parser):
        parser.add_argument("addrport", nargs="?", default="127.0.0.1:8000")
        parser.add_argument("--workers", type=int, default=25, help="simulated devices (25)")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between reports")
        parser.add_argument("--password", help="manager password (default: a new random one)")
        parser.add_argument(
            "--connect",
            metavar="URL",
            help="drive the devices against a server already running at URL instead of serving",
        )

    def handle(self, *args, addrport, workers, interval, password, connect, **options):
        call_command("migrate", interactive=False, verbosity=0)
        password = password or secrets.token_urlsafe(9)
        tokens = self.prepare_team(workers=workers, password=password)
        if connect:
            base = connect.rstrip("/")
        else:
            host, _, port = addrport.rpartition(":")
            base = f"http://{host or '127.0.0.1'}:{port}"
        self.stdout.write(
            self.style.SUCCESS(
                f"\nTeamTrack demo: open {base}/teams/{DEMO_TEAM}/\n"
                f"Log in as {DEMO_MANAGER!r} with password {password!r}.\n"
                f"{workers} simulated workers report every {interval:g} s.\n"
            )
        )
        self.stdout.flush()
        fleet = run_fleet(base.replace("http", "ws", 1) + "/ws/worker/", tokens, interval=interval)
        if connect:
            asyncio.run(fleet)
            return
        threading.Thread(target=asyncio.run, args=(fleet,), daemon=True).start()
        call_command("runserver", addrport, use_reloader=False)

    @transaction.atomic
    def prepare_team(self, *, workers: int, password: str) -> list[str]:
        """Ensure the demo team, its manager and workers; return fresh tokens for the workers."""
        team = selectors.team_get_by_slug(slug=DEMO_TEAM) or services.team_create(
            slug=DEMO_TEAM, name="Demo couriers"
        )
        manager = services.manager_ensure(username=DEMO_MANAGER, password=password)
        services.team_managers_add(team=team, users=[manager])
        existing = list(team.workers.filter(active=True)[:workers])
        tokens = [services.worker_token_rotate(worker=worker) for worker in existing]
        for number in range(len(existing) + 1, workers + 1):
            _, token = services.worker_create(team=team, name=f"Courier {number:02d}")
            tokens.append(token)
        return tokens
