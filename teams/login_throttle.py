"""Password guessing on the login pages: what django-axes needs from us (settings.AXES_*).

Axes counts failed logins in the database, which every replica shares, so the limits hold across
replicas: failures for one user name (from anywhere) lock that name, failures from one address
(for any names) lock that address, each for a cool-off after its last failure.
"""

from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username
from axes.models import AccessAttempt
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str | None:
    """Return the address that failures count against (AXES_CLIENT_IP_CALLABLE)."""
    # REMOTE_ADDR is already the client's own: teamtrack/proxies.py takes it from X-Forwarded-For
    # only when the connection comes from a trusted proxy. Reading that header here would let
    # each guess name an address of its own. (force_login's requests have no REMOTE_ADDR.)
    return request.META.get("REMOTE_ADDR")


class LoginFailures(AxesDatabaseHandler):
    """Axes' database handler, but a successful login forgets only its user name's failures."""

    def reset_user_attempts(self, request: HttpRequest, credentials: dict | None = None) -> int:
        """Forget the failures of the user name that just logged in (AXES_RESET_ON_SUCCESS)."""
        # Axes would also forget every failure from the address: anyone with an account could
        # then guess other user names without end, logging in once every few guesses.
        username = get_client_username(request, credentials)
        count, _ = AccessAttempt.objects.filter(username=username).delete()
        return count
