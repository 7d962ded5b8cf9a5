"""Personal API tokens (teams.models.ApiToken) on the API: `Authorization: Bearer <token>`, or
`Token <token>` as DRF's own token scheme spells it.

A request that names one of these schemes with a token that opens nothing is refused (401)
rather than treated as anonymous: a script with a revoked token should hear so at once. The
token never reaches a log: it travels in a header, which request records do not print, and
Django's error reports mask (SafeExceptionReporterFilter hides every header named *AUTH*).
"""

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from teams import selectors, services

KEYWORDS = ("bearer", "token")


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """Authenticate a request by a manager's personal API token; it acts as its user."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request)
        # Latin-1 reads any bytes: a header with odd bytes is a bad token (401), never a 500.
        scheme, _, token = header.decode("latin-1").strip().partition(" ")
        if scheme.lower() not in KEYWORDS:
            return None  # no header, or another scheme: the session may still authenticate
        token = token.strip()
        if not token or " " in token:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        api_token = selectors.api_token_get_active(token=token)
        if api_token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        services.api_token_touch(api_token=api_token)
        return api_token.user, api_token

    def authenticate_header(self, request):
        # Names the scheme in WWW-Authenticate, which also makes DRF answer 401 (not 403) to a
        # request with no credentials at all.
        return "Bearer"


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """The token's entry in the OpenAPI schema's security schemes."""

    target_class = ApiTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token, created on /account/api-tokens/ "
            "(`Token <token>` is accepted too).",
        }
