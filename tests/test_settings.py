"""teamtrack/settings.py: production unless told otherwise. With DEBUG off it refuses a weak
SECRET_KEY, sends browsers to HTTPS with Secure cookies, HSTS and the Content-Security-Policy,
and `check --deploy` finds nothing to say about the environment compose.yaml gives."""

import importlib.util
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ROOT / "teamtrack" / "settings.py"
HOST = "track.example.com"
PRODUCTION = {
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": HOST,
    "MAP_TILE_URL": "https://{s}.tiles.example.org/{z}/{x}/{y}.png",
}
# What the requests below depend on; the rest of the settings are the same in both modes.
SECURITY_SETTINGS = (
    "DEBUG",
    "ALLOWED_HOSTS",
    "MIDDLEWARE",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SECURE_SSL_REDIRECT",
    "SECURE_REDIRECT_EXEMPT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "CONTENT_SECURITY_POLICY",
)
HOW_TO_MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(50))"'


def load_settings(monkeypatch, **env: str | None) -> dict:
    """Execute a fresh copy of the settings module in this environment (None: unset) and
    return its settings."""
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    spec = importlib.util.spec_from_file_location("settings_under_test", SETTINGS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {name: getattr(module, name) for name in dir(module) if name.isupper()}


def policy(response) -> dict[str, list[str]]:
    """The Content-Security-Policy of a response, directive by directive."""
    directives = [part.split() for part in response["Content-Security-Policy"].split(";")]
    return {name: sources for name, *sources in directives}


@pytest.fixture
def production(monkeypatch):
    """A client of the production settings (DEBUG unset), as browsers reach it."""
    values = load_settings(monkeypatch, DEBUG=None, **PRODUCTION)
    with override_settings(**{name: values[name] for name in SECURITY_SETTINGS}):
        yield Client(HTTP_HOST=HOST)


def test_debug_is_off_unless_set(monkeypatch):
    values = load_settings(monkeypatch, DEBUG=None, **PRODUCTION)
    assert values["DEBUG"] is False
    assert values["STORAGES"]["staticfiles"]["BACKEND"].startswith("whitenoise.")


@pytest.mark.django_db
def test_with_debug_off_pages_come_with_hsts_the_policy_and_secure_cookies(
    production, django_user_model
):
    page = production.get("/accounts/login/", secure=True)
    assert page.status_code == 200
    assert page["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert page.cookies["csrftoken"]["secure"]
    assert policy(page) == {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:", "https://*.tiles.example.org"],
        "connect-src": ["'self'", f"wss://{HOST}"],
        "worker-src": ["'self'"],
        "manifest-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    django_user_model.objects.create_user("ann", password="pw-ann-123")
    form = {"username": "ann", "password": "pw-ann-123"}
    logged_in = production.post("/accounts/login/", form, secure=True)
    assert logged_in.status_code == 302
    assert logged_in.cookies["sessionid"]["secure"]


@pytest.mark.django_db
def test_with_debug_off_plain_http_goes_to_https_but_the_probes_stay(production):
    page = production.get("/accounts/login/")
    assert page.status_code == 301
    assert page["Location"] == f"https://{HOST}/accounts/login/"
    assert "Strict-Transport-Security" not in page  # only ever sent over HTTPS
    assert production.get("/healthz").status_code == 200
    assert production.get("/readyz").status_code in (200, 503)


def test_development_keeps_plain_http_and_the_policy(monkeypatch):
    values = load_settings(monkeypatch, DEBUG="true", SECRET_KEY=None, MAP_TILE_URL=None)
    assert values["SECRET_KEY"] == values["DEVELOPMENT_SECRET_KEY"]
    assert not values["SESSION_COOKIE_SECURE"] and not values["CSRF_COOKIE_SECURE"]
    assert not values["SECURE_SSL_REDIRECT"] and values["SECURE_HSTS_SECONDS"] == 0
    # The policy applies in development too, so that what it blocks shows there first.
    directives = values["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]
    assert directives["img-src"] == ["'self'", "data:", "https://tile.openstreetmap.org"]


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run manage.py in a fresh process with these variables (and no DEBUG unless given)."""
    inherited = {name: value for name, value in os.environ.items() if name != "DEBUG"}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**inherited, "DJANGO_SETTINGS_MODULE": "teamtrack.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "key",
    [
        None,
        "",
        "a" * 50,  # long, but one character
        "abcd" * 20,  # four different characters
        secrets.token_urlsafe(30),  # 40 characters
        "django-insecure-" + secrets.token_urlsafe(50),
        "teamtrack-development-only-not-a-secret",
    ],
    ids=["unset", "empty", "one-character", "four-characters", "short", "insecure", "development"],
)
def test_with_debug_off_a_weak_secret_key_stops_the_start(key):
    result = manage("check", env={} if key is None else {"SECRET_KEY": key})
    assert result.returncode != 0
    assert "ImproperlyConfigured: SECRET_KEY is" in result.stderr
    assert HOW_TO_MAKE_A_KEY in result.stderr


def compose_environment(**variables: str) -> dict[str, str]:
    """The web service's environment in compose.yaml, with these variables of the shell."""
    text = (ROOT / "compose.yaml").read_text()
    block = text.split("x-teamtrack-environment: &teamtrack-environment\n", 1)[1]
    environment = {}
    for line in block.splitlines():
        if not line.startswith("  "):
            break
        match = re.fullmatch(r"  (\w+): (.*)", line)
        if match:
            environment[match[1]] = match[2].strip('"')

    def substitute(match: re.Match) -> str:  # ${NAME:-default} and ${NAME:?error}
        name, kind, rest = match.groups()
        if name in variables:
            return variables[name]
        assert kind == ":-", f"compose.yaml requires {name}"
        return rest

    pattern = re.compile(r"\$\{(\w+)(:[-?])([^}]*)\}")
    return {name: pattern.sub(substitute, value) for name, value in environment.items()}


def test_check_deploy_passes_the_documented_production_environment():
    env = compose_environment(
        SECRET_KEY=secrets.token_urlsafe(50), POSTGRES_PASSWORD=secrets.token_urlsafe(24)
    )
    assert env["DEBUG"] == "false"
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    "variables",
    [
        {"WORKER_FRAMES_PER_SECOND": "0"},
        {"WORKER_FRAME_BURST": "0"},
        {"OFFLINE_GRACE_SECONDS": "8", "PRESENCE_TTL_SECONDS": "15"},
        {"OFFLINE_GRACE_SECONDS": "-1"},
        {"HISTORY_RETENTION_DAYS": "0"},
        {"HISTORY_MAX_PENDING": "499"},
    ],
)
def test_limits_that_could_not_work_stop_the_start(monkeypatch, variables):
    # A rate of 0 divided by zero on the first upload; a grace past half the presence lease let
    # a reaper show the worker offline before the grace was over.
    with pytest.raises(ImproperlyConfigured):
        load_settings(monkeypatch, DEBUG="true", **variables)


def test_a_short_presence_lease_shortens_the_default_grace(monkeypatch):
    loaded = load_settings(monkeypatch, DEBUG="true", PRESENCE_TTL_SECONDS="3")
    assert loaded["TEAMTRACK_OFFLINE_GRACE"] == pytest.approx(0.6)


def test_the_embedded_sqlite_database_runs_in_wal_mode(tmp_path):
    """WAL lets the map's reads and the history writer's inserts go on at once."""
    database = tmp_path / "db.sqlite3"
    script = (
        "import django; django.setup(); from django.db import connection; "
        "print(connection.cursor().execute('PRAGMA journal_mode').fetchone()[0])"
    )
    env = {**os.environ, "DEBUG": "true", "DATABASE_URL": f"sqlite:///{database}"}
    env["DJANGO_SETTINGS_MODULE"] = "teamtrack.settings"
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert run.stdout.strip() == "wal", run.stderr
