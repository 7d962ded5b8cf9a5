"""Set up a demo team with simulated couriers and serve the app, so the map moves at once."""

import asyncio
import errno
import secrets
import socket
import threading

from daphne.management.commands.runserver import Command as RunserverCommand
from daphne.server import Server
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
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
        if connect:
            base = connect.rstrip("/")
        else:
            host, port = split_addrport(addrport)
            # Before anything else: a demo that cannot serve must not rotate the demo workers'
            # tokens (an earlier demo's devices may be using them) nor drive devices at a stranger.
            ensure_can_listen(host, port)
            base = f"http://{host}:{port}"
        call_command("migrate", interactive=False, verbosity=0)
        password = password or secrets.token_urlsafe(9)
        tokens = self.prepare_team(workers=workers, password=password)
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
        # A daemon thread: however the server ends (stopped, failing to start, raising), the
        # devices end with the process.
        threading.Thread(target=asyncio.run, args=(fleet,), daemon=True).start()
        call_command(DemoRunserverCommand(), addrport, use_reloader=False)

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


def split_addrport(addrport: str) -> tuple[str, int]:
    """Split runserver's `[ADDRESS:]PORT` into the host of a URL (IPv6 in brackets) and a port."""
    host, _, port = addrport.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise CommandError(f"{addrport!r} is not a port or an address:port pair.")
    return host or "127.0.0.1", int(port)


def ensure_can_listen(host: str, port: int) -> None:
    """Raise CommandError, saying what to do, unless the server will be able to listen there."""
    address = host.strip("[]")
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            # As Twisted listens: a port left with connections in TIME_WAIT is free to it.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((address, port))
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise CommandError(
                f"Port {port} on {host} is in use; stop what holds it or run "
                f"`.venv/bin/python manage.py demo {host}:{port + 1}`."
            ) from None
        raise CommandError(f"Cannot listen on {host}:{port}: {error.strerror or error}.") from None


class DemoServer(Server):
    """Daphne's server, failing when it could not listen: daphne's runserver would return as
    if stopped, and the demo would exit with success."""

    def run(self):
        super().run()
        if self.abort_start:  # daphne has logged why (its own command line exits 1 here too)
            raise CommandError("The server could not start (see the line above).")


class DemoRunserverCommand(RunserverCommand):
    server_cls = DemoServer
