"""Fixtures shared by every test: a fresh relay and channel layer, teams, workers and logins."""

from types import SimpleNamespace

import pytest
from channels.layers import channel_layers
from django.test import Client

from teams import services
from tracking.limits import reset_limits
from tracking.relay import reset_relay


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Real hashing costs ~0.3 s a user; tests create many users and learn nothing from it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def offline_at_once(settings):
    # Most tests watch a worker go offline the moment its socket closes; the tests of the grace
    # that debounces a flapping device (OFFLINE_GRACE_SECONDS) set it themselves.
    settings.TEAMTRACK_OFFLINE_GRACE = 0.0


@pytest.fixture(autouse=True)
def acks_a_second_apart(settings):
    # Most tests wait a second or two for the acks after a socket's first; the tests of the ack
    # interval (ACK_INTERVAL_SECONDS, 3 s by default) set it themselves, and the benchmark's and
    # the browser's tests run the default.
    settings.TEAMTRACK_ACK_INTERVAL = 1.0


@pytest.fixture(autouse=True)
def fresh_relay_and_layer():
    """Give each test its own relay and in-memory layer (they bind to one event loop), and
    forget the abuse limits (every test client comes from the same address)."""
    reset_relay()
    reset_limits()
    channel_layers.backends.clear()
    yield
    reset_relay()
    reset_limits()
    channel_layers.backends.clear()


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


@pytest.fixture
def world(django_user_model):
    """Two teams, each with a manager and workers holding fresh tokens, and a superuser."""
    alpha = services.team_create(slug="alpha", name="Alpha")
    bravo = services.team_create(slug="bravo", name="Bravo")
    ann = django_user_model.objects.create_user("ann", password="pw-ann-123")
    bob = django_user_model.objects.create_user("bob", password="pw-bob-123")
    root = django_user_model.objects.create_superuser("root", password="pw-root-123")
    services.team_managers_add(team=alpha, users=[ann])
    services.team_managers_add(team=bravo, users=[bob])
    a1, a1_token = services.worker_create(team=alpha, name="Alice")
    a2, a2_token = services.worker_create(team=alpha, name="Arno")
    b1, b1_token = services.worker_create(team=bravo, name="Bea")
    return SimpleNamespace(
        alpha=alpha,
        bravo=bravo,
        ann=ann,
        bob=bob,
        root=root,
        a1=a1,
        a2=a2,
        b1=b1,
        tokens={a1.id: a1_token, a2.id: a2_token, b1.id: b1_token},
        cookies={user.username: session_cookie(user) for user in (ann, bob, root)},
    )
