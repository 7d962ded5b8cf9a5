"""Password guessing on the login pages (teams/login_throttle.py, django-axes): failures lock a
user name from any address, and an address for any names; a locked login gets a 429 page."""

import itertools
import logging
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import AsyncClient, Client
from django.utils import timezone

pytestmark = pytest.mark.django_db

LOGIN_PAGES = ["/accounts/login/", "/admin/login/"]
RIGHT = {"ann": "pw-ann-123", "bob": "pw-bob-123", "root": "pw-root-123"}  # conftest's world
addresses = (f"10.0.{n // 250}.{n % 250 + 1}" for n in itertools.count())


def limit() -> int:
    return settings.AXES_FAILURE_LIMIT


def attempt(path: str, username: str, password: str, address: str | None = None, **extra):
    """Post the login form from an address (a new one by default) with a fresh client."""
    client = Client(REMOTE_ADDR=address or next(addresses))
    response = client.post(path, {"username": username, "password": password}, **extra)
    response.logged_in = "_auth_user_id" in client.session
    return response


def logs_in(path: str, username: str, address: str | None = None) -> bool:
    response = attempt(path, username, RIGHT[username], address)
    assert response.status_code in (200, 302, 429), response.status_code
    return response.status_code == 302 and response.logged_in


def refused_as_locked(response) -> bool:
    return (
        response.status_code == 429
        and not response.logged_in
        and "Too many failed logins" in response.content.decode()
    )


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_wrong_passwords_from_anywhere_lock_the_user_name(world, path):
    for _ in range(limit() - 1):  # each from an address of its own: the name is what counts
        assert attempt(path, "root", "wrong").status_code == 200
    assert logs_in(path, "root")  # just under the limit; and it forgets the failures
    for _ in range(limit()):
        assert attempt(path, "root", "wrong").status_code in (200, 429)
    assert refused_as_locked(attempt(path, "root", RIGHT["root"]))
    for other in LOGIN_PAGES:  # the other page, from yet another address, is locked too
        assert refused_as_locked(attempt(other, "root", RIGHT["root"]))
    # Another user name from another address is unaffected.
    assert logs_in("/accounts/login/", "bob")


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_many_user_names_from_one_address_lock_the_address(world, path):
    address = "203.0.113.7"
    for number in range(limit()):
        attempt(path, f"nobody-{number}", "guess", address)
    assert refused_as_locked(attempt(path, "root", RIGHT["root"], address))
    # The same user name from another address still logs in.
    assert logs_in(path, "root")


def test_x_forwarded_for_cannot_pick_a_fresh_address(world):
    # nginx sets the real one (and the ASGI layer puts it in REMOTE_ADDR): the header a client
    # sends itself is never read, or each guess could claim an address of its own.
    address = "203.0.113.8"
    for number in range(limit()):
        spoofed = {"HTTP_X_FORWARDED_FOR": f"198.51.100.{number + 1}"}
        attempt("/accounts/login/", f"nobody-{number}", "guess", address, **spoofed)
    spoofed = {"HTTP_X_FORWARDED_FOR": "198.51.100.200"}
    response = attempt("/accounts/login/", "ann", RIGHT["ann"], address, **spoofed)
    assert refused_as_locked(response)


def test_a_successful_login_forgets_its_names_failures_but_not_its_addresss(world):
    address = "203.0.113.9"
    for _ in range(limit() - 1):
        attempt("/accounts/login/", "ann", "wrong", address)
    assert logs_in("/accounts/login/", "ann", address)
    for _ in range(limit() - 1):  # ann's count starts again (from another address, too)
        attempt("/accounts/login/", "ann", "wrong")
    assert logs_in("/accounts/login/", "ann")
    # Stock axes (AXES_RESET_ON_SUCCESS) also forgets the address's failures: anyone with an
    # account could then guess other names without end, logging in between guesses.
    spray = "203.0.113.10"
    for number in range(limit() - 1):
        attempt("/accounts/login/", f"nobody-{number}", "guess", spray)
    assert logs_in("/accounts/login/", "bob", spray)
    attempt("/accounts/login/", "nobody-last", "guess", spray)
    assert refused_as_locked(attempt("/accounts/login/", "bob", RIGHT["bob"], spray))


def test_the_lock_lifts_a_cool_off_after_the_last_try(world):
    for _ in range(limit()):
        attempt("/accounts/login/", "ann", "wrong")
    locked = attempt("/accounts/login/", "ann", RIGHT["ann"])
    assert refused_as_locked(locked)
    minutes = round(settings.AXES_COOLOFF_TIME.total_seconds() / 60)
    assert f"Try again in {minutes} minutes" in locked.content.decode()
    # As if the cool-off had passed since the last try (that refused one included).
    last_try = timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    AccessAttempt.objects.update(attempt_time=last_try)
    assert logs_in("/accounts/login/", "ann")


def test_wrong_passwords_below_the_limit_get_the_form_again(world):
    response = attempt("/accounts/login/", "ann", "wrong")
    assert response.status_code == 200 and not response.logged_in
    assert "Please enter a correct username and password" in response.content.decode()


def test_no_password_reaches_a_log_or_the_database(world, caplog):
    secret = "Hunter2-never-logged"
    with caplog.at_level(logging.DEBUG), caplog.at_level(logging.DEBUG, logger="axes"):
        for _ in range(limit() + 2):
            attempt("/accounts/login/", "ann", secret, "203.0.113.11")
        attempt("/accounts/login/", "ann", RIGHT["ann"], "203.0.113.11")
        attempt("/admin/login/", "root", secret)
    assert any(record.name.startswith("axes") for record in caplog.records)
    assert secret not in caplog.text and RIGHT["ann"] not in caplog.text
    stored = " ".join(a.post_data + a.get_data for a in AccessAttempt.objects.all())
    assert "ann" in "".join(AccessAttempt.objects.values_list("username", flat=True))
    assert secret not in stored and RIGHT["ann"] not in stored


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(20)
@pytest.mark.parametrize("path", LOGIN_PAGES)
async def test_a_locked_login_is_a_429_page_under_asgi_too(world, path):
    # Daphne runs the middleware chain asynchronously, through axes' own async branch.
    for _ in range(limit()):
        await AsyncClient().post(path, {"username": "root", "password": "wrong"})
    response = await AsyncClient().post(path, {"username": "root", "password": RIGHT["root"]})
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert "sessionid" not in response.cookies
