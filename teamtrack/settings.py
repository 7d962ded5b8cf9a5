"""Settings for TeamTrack, read once from the environment (see .env.example).

The embedded defaults run everything in one process: SQLite, the in-memory channel layer and
local hosts only. DEBUG is off unless set (and then SECRET_KEY must be); development sets
DEBUG=true.
"""

import warnings
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONE, SELF
from django.core.checks.security.base import (
    SECRET_KEY_INSECURE_PREFIX,
    SECRET_KEY_MIN_LENGTH,
    SECRET_KEY_MIN_UNIQUE_CHARACTERS,
)
from django.core.exceptions import ImproperlyConfigured
from xstatic.pkg import leaflet as xstatic_leaflet

from teamtrack.csp import tile_sources

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEVELOPMENT_SECRET_KEY = "teamtrack-development-only-not-a-secret"

# Off unless set: a forgotten variable must never show Django's debug pages (every setting and
# URL) to the world. `make demo`, README.md's development commands and the tests set DEBUG=true.
DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default=DEVELOPMENT_SECRET_KEY if DEBUG else "")
# Sessions, CSRF tokens and password-reset links are signed with it. With DEBUG off, refuse to
# start on anything `check --deploy` would call weak (security.W009: fewer than 50 characters or
# than 5 different ones, or Django's "django-insecure-" prefix), and on the development key.
if not DEBUG and (
    SECRET_KEY == DEVELOPMENT_SECRET_KEY
    or len(SECRET_KEY) < SECRET_KEY_MIN_LENGTH
    or len(set(SECRET_KEY)) < SECRET_KEY_MIN_UNIQUE_CHARACTERS
    or SECRET_KEY.startswith(SECRET_KEY_INSECURE_PREFIX)
):
    raise ImproperlyConfigured(
        f"SECRET_KEY is {'too weak' if SECRET_KEY else 'not set'}, and DEBUG is off. Set it to a "
        f"random string of {SECRET_KEY_MIN_LENGTH} characters or more, made with: "
        """python -c "import secrets; print(secrets.token_urlsafe(50))" """
        "(or set DEBUG=true, for development only)."
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Behind nginx (or any TLS-terminating proxy), trust its word on whether the request was HTTPS.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# With DEBUG off, browsers use HTTPS only (TLS: deploy/nginx-compose.conf, docs/operations.md).
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
# nginx already sends browsers from port 80 to HTTPS; this redirects whatever reaches a replica
# over plain HTTP some other way. The probes are exempt: the compose healthcheck, load balancers
# and Prometheus call each replica directly, over plain HTTP on the internal network. (The phone
# apps' /osmand/ and /owntracks/ are consumers, before Django: never redirected here.)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
# HSTS, on HTTPS responses: browsers then refuse plain HTTP to this host (and, by default, its
# subdomains) for this long. A year, as `check --deploy` asks; when first moving a site to HTTPS,
# start with minutes (SECURE_HSTS_SECONDS=300), as a browser cannot be told to forget it sooner.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 365 * 24 * 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Asking browsers to preload the whole registrable domain is its owner's decision (and hard to
# undo), not an application default: opt in with SECURE_HSTS_PRELOAD=true. So `check --deploy`'s
# reminder of it (security.W021) is silenced; every other deployment check passes.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = ["security.W021"]

INSTALLED_APPS = [
    # daphne first, so that `runserver` serves the ASGI application (HTTP and WebSockets).
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    # django-csp: its checks of the policy's settings.
    "csp",
    # Counts failed logins (in the database) and locks guessers out: see AXES_* below.
    "axes",
    "rest_framework",
    "drf_spectacular",
    "teams",
    "tracking",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves collected static files (Leaflet, our modules) from every replica, with caching.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # The Content-Security-Policy header of every page (CONTENT_SECURITY_POLICY below).
    "teamtrack.csp.ContentSecurityPolicyMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last: it turns a login that axes refused into the lockout page (429).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "teamtrack.urls"
ASGI_APPLICATION = "teamtrack.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Sockets look tokens up on one database thread per replica: keeping its connection (checked
# before reuse) spares a reconnect storm one PostgreSQL connection setup per device.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A database that is down or unreachable fails a connection within seconds: the history
    # writer then keeps its rows and tries again, and no request hangs on a TCP timeout.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 5)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded default: WAL lets the map's readers and the history writer work at once, and
    # a write waits for the lock (up to 20 s) instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE", "timeout": 20}
    )

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "team-list"
LOGOUT_REDIRECT_URL = "login"

# Password guessing on both login pages (django-axes; teams/login_throttle.py). Failures are
# counted in the database, which every replica shares. LOGIN_FAILURE_LIMIT of them lock a user
# name (tried from any addresses) and, apart from that, an address (trying any names), until
# LOGIN_COOLOFF_MINUTES after the last one; tries while locked count too. So a guesser gets 10
# passwords a name per 15 minutes however many addresses it has, and a manager who mistypes a
# few times is never stopped. `manage.py axes_reset_username NAME` lets a locked manager in.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked login before any hashing
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "teams.login_throttle.LoginFailures"
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]  # each locks on its own (not the pair)
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_COOLOFF_MINUTES", default=15))
AXES_RESET_ON_SUCCESS = True  # a manager's own mistypes are forgotten once they get in
# REMOTE_ADDR only, never X-Forwarded-For: see teams/login_throttle.py.
AXES_CLIENT_IP_CALLABLE = "teams.login_throttle.client_address"
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Failures are what we need; a row for every successful login would grow for ever.
AXES_DISABLE_ACCESS_LOG = True

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where collectstatic puts the files (the image: /app/staticfiles); deploy/static.py collects
# the local cluster's into a folder of its own.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
# Until collectstatic fills STATIC_ROOT (production images do), WhiteNoise serves files through
# the finders in development and would warn about the missing folder on every start.
warnings.filterwarnings("ignore", message="No directory at", category=UserWarning)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/leaflet", xstatic_leaflet.BASE_DIR),
]

CHANNEL_LAYER = env.str("CHANNEL_LAYER", default="memory")
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# Prefix of every Redis key and pub/sub channel of this deployment, so that several deployments
# (or test runs) can share one Redis without hearing each other.
REDIS_PREFIX = env.str("REDIS_PREFIX", default="teamtrack")
KAFKA_BOOTSTRAP_SERVERS = env.str("KAFKA_BOOTSTRAP_SERVERS", default="127.0.0.1:9092")
CHANNEL_LAYER_BACKENDS = {
    # The relay's one channel takes a message per team and window: Channels' default capacity
    # of 100 would drop (silently, in group_send) with more teams than that in one process.
    "memory": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 10_000}},
    # Default for several replicas: one publish per group message, delivered only to the
    # replicas subscribed to the group (see docs/architecture.md for the measurement).
    "redis": {
        # channels-redis' pub/sub layer, plus one pipelined group_send_many (tracking/layers/redis.py)
        "BACKEND": "tracking.layers.redis.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_PREFIX}-layer"},
    },
    "redis-core": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": f"{REDIS_PREFIX}-layer",
            "capacity": 1000,
            "expiry": 10,
        },
    },
    # Our own layer (tracking/layers/kafka.py); last-known positions and presence stay in Redis.
    "kafka": {
        "BACKEND": "tracking.layers.kafka.KafkaChannelLayer",
        "CONFIG": {
            "bootstrap_servers": KAFKA_BOOTSTRAP_SERVERS,
            "topic": env.str("KAFKA_TOPIC", default=f"{REDIS_PREFIX}-layer"),
            # Teams share a partition by hash: 256 keep a replica reading little more than its
            # own teams' records up to about 200 teams (loadtest/results/kafka-interest.md).
            "partitions": env.int("KAFKA_PARTITIONS", default=256),
            "replication_factor": env.int("KAFKA_REPLICATION_FACTOR", default=1),
            # Each replica's relay has one channel for all its teams' messages: Channels'
            # default of 100 queued messages overflowed (dropped) in a short stall under load.
            "capacity": 10_000,
            # A live feed: nothing is read back after seconds (docs/operations.md).
            "retention_ms": env.int("KAFKA_RETENTION_MS", default=300_000),
            "segment_ms": env.int("KAFKA_SEGMENT_MS", default=60_000),
            # Apache Kafka answers a fetch as soon as a record arrives; tansu holds every empty
            # fetch for the whole wait, so deploy/ and the tests use 10 with it.
            "fetch_wait_ms": env.int("KAFKA_FETCH_WAIT_MS", default=100),
            # librdkafka settings for every client (TLS, SASL, tuning), then per-client ones.
            "client_config": env.json("KAFKA_CLIENT_CONFIG", default={}),
            "producer_config": env.json("KAFKA_PRODUCER_CONFIG", default={}),
            "consumer_config": env.json("KAFKA_CONSUMER_CONFIG", default={}),
            "admin_config": env.json("KAFKA_ADMIN_CONFIG", default={}),
        },
    },
}
if CHANNEL_LAYER not in CHANNEL_LAYER_BACKENDS:
    raise ImproperlyConfigured(
        f"CHANNEL_LAYER must be one of {sorted(CHANNEL_LAYER_BACKENDS)}, not {CHANNEL_LAYER!r}."
    )
CHANNEL_LAYERS = {"default": CHANNEL_LAYER_BACKENDS[CHANNEL_LAYER]}
# Last-known positions and presence: in the process for one process, in Redis for replicas.
TEAMTRACK_RELAY_STATE = "memory" if CHANNEL_LAYER == "memory" else "redis"
# A replica that dies without a goodbye has its workers shown offline after at most this long.
TEAMTRACK_PRESENCE_TTL = env.float("PRESENCE_TTL_SECONDS", default=15.0)

# How long the relay gathers a team's positions before sending them to its managers.
TEAMTRACK_FLUSH_WINDOW = env.int("FLUSH_WINDOW_MS", default=100) / 1000
# A device socket acknowledges at most once per ACK_INTERVAL_SECONDS, cumulatively
# (docs/protocol.md): below a device's ack timeout (the tracking page's is 20 s). 3 s: a device
# reporting every second gets an ack for every third frame, and acks cost next to nothing
# (docs/performance.md); the benchmark counts a position unacknowledged after 5 s as an error.
TEAMTRACK_ACK_INTERVAL = env.float("ACK_INTERVAL_SECONDS", default=3.0)
if not 0 <= TEAMTRACK_ACK_INTERVAL <= 10:
    raise ImproperlyConfigured("ACK_INTERVAL_SECONDS must be from 0 to 10.")
# A worker's frames (its one live socket) or HTTP uploads, across the replicas: frames a second (on
# average, in bursts of up to WORKER_FRAME_BURST) before they are refused with `rate_limited`
# (going on closes 4429) or slowed, then answered 429.
TEAMTRACK_WORKER_FRAMES_PER_SECOND = env.float("WORKER_FRAMES_PER_SECOND", default=5.0)
TEAMTRACK_WORKER_FRAME_BURST = env.int("WORKER_FRAME_BURST", default=20)
if TEAMTRACK_WORKER_FRAMES_PER_SECOND <= 0 or TEAMTRACK_WORKER_FRAME_BURST < 1:
    raise ImproperlyConfigured("WORKER_FRAMES_PER_SECOND must be above 0, WORKER_FRAME_BURST 1+.")
# Failed device logins (bad tokens, enrolment codes) from one address in a minute, across the
# replicas, before the next failure is answered 4429/429 instead; good tokens always get in.
TEAMTRACK_FAILED_LOGINS_PER_MINUTE = env.int("FAILED_LOGINS_PER_MINUTE", default=30)
# Socket logins of one worker in a minute, across the replicas, before it is refused (4429): a
# device reconnecting after a network change or a replica's restart needs a handful.
TEAMTRACK_WORKER_LOGINS_PER_MINUTE = env.int("WORKER_LOGINS_PER_MINUTE", default=20)
# An open map checks its session again this often (seconds): one that ended in a way no signal
# reports (expired, deleted from the database) closes its maps within this long (4401).
TEAMTRACK_SESSION_RECHECK_SECONDS = env.float("SESSION_RECHECK_SECONDS", default=120.0)
# A manager socket that reads nothing for this long while frames pile up is closed with 4408.
TEAMTRACK_SLOW_MANAGER_SECONDS = env.float("SLOW_MANAGER_SECONDS", default=30.0)
# The proxies (nginx) whose X-Forwarded-For and X-Forwarded-Proto a replica believes
# (teamtrack/proxies.py): addresses or networks, as narrow as the deployment allows. From anyone
# else those headers are removed, so a client reaching a replica directly cannot pose as another.
TRUSTED_PROXIES = env.list("TRUSTED_PROXIES", default=["127.0.0.1", "::1"])
# Who may read /metrics: Prometheus scrapes each replica on the internal network.
METRICS_ALLOWED_NETWORKS = env.list(
    "METRICS_ALLOWED_NETWORKS",
    default=["127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
)
# The address phones use to reach TeamTrack (https://track.example.com), for the links of the
# phone setup page; empty: as the manager's browser reached it (wrong behind a TLS terminator
# that talks plain HTTP to nginx, which tells Django the scheme it saw).
TEAMTRACK_PUBLIC_URL = env.str("PUBLIC_URL", default="").rstrip("/")
# How far ahead of the server's clock a device's may run; a position from further ahead is
# refused (invalid_ts), as it would hide every real one after it.
TEAMTRACK_MAX_CLOCK_SKEW = env.float("MAX_CLOCK_SKEW_SECONDS", default=30.0)
# A phone app uploading over HTTP (OsmAnd, OwnTracks) counts as connected until it has sent
# nothing for this long; Traccar's own server waits as long before it calls a device offline.
TEAMTRACK_HTTP_DEVICE_TIMEOUT = env.float("HTTP_DEVICE_TIMEOUT_SECONDS", default=600.0)
# A worker is shown offline this long after its last connection closed, unless it reconnected:
# a device that flaps (between networks, or in a reconnect loop) sends its maps no presence.
TEAMTRACK_OFFLINE_GRACE = env.float(
    "OFFLINE_GRACE_SECONDS", default=min(3.0, TEAMTRACK_PRESENCE_TTL / 5)
)
# A worker in its grace holds its replica's lease unrenewed: past the lease, a reaper would show
# it offline first, and the grace would hide nothing.
if not 0 <= TEAMTRACK_OFFLINE_GRACE < TEAMTRACK_PRESENCE_TTL / 2:
    raise ImproperlyConfigured("OFFLINE_GRACE_SECONDS must be under half of PRESENCE_TTL_SECONDS.")
# The history (tracking/models.py): every accepted position is stored by the replica's writer
# (tracking/history_writer.py) before its device is acknowledged. Off only to measure its cost.
TEAMTRACK_HISTORY = env.bool("HISTORY", default=True)
# Positions older than this many days are deleted by `manage.py prune_history` (run it daily).
TEAMTRACK_HISTORY_RETENTION_DAYS = env.int("HISTORY_RETENTION_DAYS", default=90)
# Positions a replica's writer holds while the database does not take them; past it, new frames
# wait unacknowledged in their devices (never a silent drop).
TEAMTRACK_HISTORY_MAX_PENDING = env.int("HISTORY_MAX_PENDING", default=100_000)
# A stop on a track: no movement beyond STOP_RADIUS_METRES for STOP_MINUTES (the page's default).
TEAMTRACK_STOP_MINUTES = env.float("STOP_MINUTES", default=5.0)
TEAMTRACK_STOP_RADIUS_METRES = env.float("STOP_RADIUS_METRES", default=50.0)
# A full batch frame (500 positions, tracking.protocol.MAX_BATCH_POSITIONS) must fit in the
# writer, or a device whose queue is that long would never be acknowledged.
if TEAMTRACK_HISTORY_RETENTION_DAYS < 1 or TEAMTRACK_HISTORY_MAX_PENDING < 500:
    raise ImproperlyConfigured(
        "HISTORY_RETENTION_DAYS must be 1 or more, HISTORY_MAX_PENDING 500 (a full batch) or more."
    )

# A worker whose last position is older than this shows as stale on the map.
TEAMTRACK_STALE_AFTER = env.int("STALE_AFTER_SECONDS", default=30)
# Days a one-time enrolment link (the phone setup page's browser link) stays usable.
TEAMTRACK_ENROLMENT_DAYS = env.int("ENROLMENT_DAYS", default=7)
TEAMTRACK_MAP_TILE_URL = env.str(
    "MAP_TILE_URL", default="https://tile.openstreetmap.org/{z}/{x}/{y}.png"
)
TEAMTRACK_MAP_TILE_ATTRIBUTION = env.str(
    "MAP_TILE_ATTRIBUTION", default="&copy; OpenStreetMap contributors"
)

# Content-Security-Policy (django-csp), with DEBUG on too, so that development meets what it
# blocks: our own origin, and map tiles from MAP_TILE_URL's host. Nothing inline: pages take their
# configuration as json_script data (not run as scripts) and their styles from static/css.
# teamtrack/csp.py adds the page's own socket origin to connect-src.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        # data: for Leaflet, which blanks the tiles it drops with an empty data: GIF.
        "img-src": [SELF, "data:", *tile_sources(TEAMTRACK_MAP_TILE_URL)],
        "connect-src": [SELF],
        "worker-src": [SELF],  # the tracking page's service worker, /track/sw.js
        "manifest-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {
        "repeats": {"()": "tracking.logs.RepeatsOncePerMinute"},
        "query_strings_out": {"()": "tracking.logs.QueryStringsOut"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Every record once, through the root's handler: Django's default configuration gives
        # "django" a console handler of its own (with DEBUG on), and runserver's socket and
        # request lines (django.channels.server) went out through both.
        "django": {"handlers": []},
        # "repeats": loggers that repeat themselves every second during an outage;
        # "query_strings_out": request records, whose query strings would carry OsmAnd devices'
        # tokens (see tracking/logs.py).
        "channels_redis.pubsub": {"filters": ["repeats"]},
        # librdkafka's own log lines (tracking/layers/kafka_clients.py): warnings and worse.
        "tracking.layers.kafka.client": {"level": "WARNING", "filters": ["repeats"]},
        # A phone left with a revoked token retries for ever: its refusals, once a minute.
        "tracking.phone_consumers": {"filters": ["repeats"]},
        "django.request": {"filters": ["query_strings_out", "repeats"]},
        "django.security": {"filters": ["query_strings_out"]},
        "django.channels.server": {"filters": ["query_strings_out"]},
        # django-axes says three INFO lines for every login (and one at every start); failures
        # and lockouts are WARNINGs, with the user name and address masked.
        "axes": {"level": "WARNING"},
    },
}

# The read-only history API (tracking/api/): a manager's session or personal API token.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "tracking.api.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TeamTrack history API",
    "DESCRIPTION": "Read-only: the teams you manage, their workers, and their stored positions.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema holds no data: served to anyone, whatever credentials (even bad ones) come along.
    "SERVE_AUTHENTICATION": [],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",  # the default
        "tracking.api.schema.allow_empty_filters",
    ],
}
