"""The browser tracking page's HTTP side (tracking/track_views.py): the page, /track/enrol, the
manifest, the icon and the service worker."""

import json
import logging
import re

import pytest
from asgiref.sync import async_to_sync
from django.contrib.staticfiles import finders

from teams import services
from teams.selectors import worker_get_by_token
from tracking import limits

pytestmark = pytest.mark.django_db

ENROL = "/track/enrol"


def enrol(client, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(ENROL, data, content_type="application/json", **extra)


@pytest.fixture
def setup(world):
    """A phone setup of Alice (team alpha): her new token and a one-time enrolment code."""
    return services.worker_setup_issue(worker=world.a1)


# ---------------------------------------------------------------- /track/enrol


def test_a_code_is_exchanged_for_the_workers_token(client, world, setup):
    response = enrol(client, {"code": setup.enrolment_code})
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "token": setup.token,
        "worker": {"id": world.a1.id, "name": "Alice"},
        "team": {"slug": "alpha", "name": "Alpha"},
    }
    assert worker_get_by_token(token=response.json()["token"]) == world.a1
    assert "no-store" in response["Cache-Control"]


def test_a_code_works_once(client, setup):
    assert enrol(client, {"code": setup.enrolment_code}).status_code == 200
    again = enrol(client, {"code": setup.enrolment_code})
    assert again.status_code == 410
    assert again["Content-Type"].startswith("text/plain")
    assert b"used" in again.content
    assert setup.token.encode() not in again.content
    assert "no-store" in again["Cache-Control"]


def test_an_unknown_code_is_gone(client, world):
    response = enrol(client, {"code": "no-such-code-at-all"})
    assert response.status_code == 410
    assert len(response.content) < 100


def test_a_replaced_link_no_longer_works(client, world, setup):
    services.worker_setup_issue(worker=world.a1)  # a second setup replaces the first link
    assert enrol(client, {"code": setup.enrolment_code}).status_code == 410


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        b"\xff\xfe\x00",
        "[]",
        "{}",
        {"code": ""},
        {"code": 42},
        {"code": None},
        {"code": "x" * 257},
        {"token": "abc"},
    ],
)
def test_a_malformed_request_is_refused(client, world, body):
    response = enrol(client, body)
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/plain")
    assert "no-store" in response["Cache-Control"]


def test_malformed_requests_do_not_count_as_failed_logins(client, world, settings, setup):
    settings.TEAMTRACK_FAILED_LOGINS_PER_MINUTE = 2
    for _ in range(5):
        assert enrol(client, "not json").status_code == 400
    assert enrol(client, {"code": setup.enrolment_code}).status_code == 200


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_are_not_allowed(client, world, method):
    response = getattr(client, method)(ENROL)
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_no_csrf_token_or_cookie_is_needed(world, setup):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    assert enrol(strict, {"code": setup.enrolment_code}).status_code == 200


def test_an_address_that_failed_too_often_is_told_to_wait_but_a_good_code_gets_in(
    client, world, settings, setup
):
    # Codes are as unguessable as tokens (256 bits): the limit spares the database a flood;
    # it must not lock out the phones behind a carrier's shared address.
    settings.TEAMTRACK_FAILED_LOGINS_PER_MINUTE = 3
    for attempt in range(3):
        assert enrol(client, {"code": f"wrong-code-{attempt}"}).status_code == 410
    blocked = enrol(client, {"code": "wrong-code-3"})
    assert blocked.status_code == 429
    assert "no-store" in blocked["Cache-Control"]
    assert enrol(client, {"code": setup.enrolment_code}).status_code == 200
    other = enrol(client, {"code": "wrong-code-4"}, REMOTE_ADDR="10.1.2.3")
    assert other.status_code == 410


def test_the_worker_sockets_share_the_failed_login_count(client, world, settings):
    settings.TEAMTRACK_FAILED_LOGINS_PER_MINUTE = 2
    async_to_sync(limits.get_limits().login_failed)("127.0.0.1")  # a socket with a bad token
    assert enrol(client, {"code": "wrong"}).status_code == 410
    assert enrol(client, {"code": "wrong-again"}).status_code == 429


def test_neither_the_code_nor_the_token_is_logged(client, world, setup, caplog):
    caplog.set_level(logging.DEBUG)
    enrol(client, {"code": setup.enrolment_code})
    enrol(client, {"code": setup.enrolment_code})  # used: 410
    enrol(client, {"code": setup.enrolment_code + "x"})  # unknown: 410
    assert caplog.records, "expected the requests to log something (else this test proves nothing)"
    text = "\n".join(record.getMessage() for record in caplog.records)
    text += "\n".join(str(record.args) for record in caplog.records)
    assert setup.enrolment_code not in text
    assert setup.token not in text


# ---------------------------------------------------------------- the page and its files


def test_the_page_needs_no_login_and_carries_its_config(client):
    response = client.get("/track/")
    assert response.status_code == 200
    page = response.content.decode()
    config = json.loads(re.search(r'id="track-config"[^>]*>(.*?)</script>', page).group(1))
    assert config == {
        "socketPath": "/ws/worker/",
        "enrolPath": "/track/enrol",
        "serviceWorker": "/track/sw.js",
        "scope": "/track/",
    }
    assert '<link rel="manifest" href="/track/manifest.webmanifest">' in page
    assert '<script type="module" src="/static/js/track/page.js">' in page
    assert "/static/css/track.css" in page
    # Standalone: no manager header, no link to pages that need a login.
    assert "Log out" not in page and 'href="/"' not in page


def test_the_page_only_answers_get(client):
    assert client.post("/track/").status_code == 405
    assert client.head("/track/").status_code == 200


def test_the_manifest_makes_the_page_installable(client):
    response = client.get("/track/manifest.webmanifest")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/manifest+json"
    manifest = json.loads(response.content)
    assert manifest["start_url"] == manifest["scope"] == "/track/"
    assert manifest["display"] == "standalone"
    assert {icon["src"] for icon in manifest["icons"]} == {"/track/icon.svg"}
    icon = client.get("/track/icon.svg")
    assert icon.status_code == 200 and icon["Content-Type"].startswith("image/svg+xml")
    assert icon.content.startswith(b"<svg")


def test_the_service_worker_covers_the_page_and_caches_its_shell(client):
    response = client.get("/track/sw.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/javascript")
    assert response["Service-Worker-Allowed"] == "/track/"
    script = response.content.decode()
    shell = json.loads(re.search(r"^const SHELL = (.*);$", script, re.M).group(1))
    never = json.loads(re.search(r"^const NEVER = (.*);$", script, re.M).group(1))
    assert "/track/" in shell and "/static/js/track/page.js" in shell
    assert "/static/css/track.css" in shell
    assert "/track/enrol" not in shell and "/track/enrol" in never
    assert not [url for url in shell if url.startswith("/ws/")]
    # Every file of the shell exists: one missing would fail the worker's whole install.
    for url in shell:
        if url.startswith("/static/"):
            assert finders.find(url.removeprefix("/static/")), url
        else:
            assert client.get(url).status_code == 200, url
    assert re.search(r'^const CACHE = "teamtrack-track-[0-9a-f]{16}";$', script, re.M)


@pytest.mark.parametrize("code", ["\ud800", "codé"], ids=["lone-surrogate", "non-ascii"])
def test_a_code_that_cannot_be_one_is_gone_not_a_500(client, world, code):
    response = client.post("/track/enrol", {"code": code}, content_type="application/json")
    assert response.status_code == 410
