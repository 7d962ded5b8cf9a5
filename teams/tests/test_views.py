"""Pages: login, the team list, the map, the workers page and the phone setup, each limited to
the teams a user manages."""

import base64
import html
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client

from teams import services, signals
from teams.models import Enrolment, Worker
from teams.selectors import worker_get_by_token

pytestmark = pytest.mark.django_db


def test_pages_need_a_login(client, world):
    for url in ("/", "/teams/alpha/"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")


def test_login_page_and_logging_in(client, world):
    assert client.get("/accounts/login/").status_code == 200
    response = client.post("/accounts/login/", {"username": "ann", "password": "pw-ann-123"})
    assert response.status_code == 302 and response["Location"] == "/"


def test_team_list_shows_only_the_users_teams(client, world):
    client.force_login(world.ann)
    page = client.get("/").content.decode()
    assert "/teams/alpha/" in page and "/teams/bravo/" not in page


def test_map_page_carries_its_config_and_leaflet_from_static_files(client, world):
    client.force_login(world.ann)
    response = client.get("/teams/alpha/")
    assert response.status_code == 200
    page = response.content.decode()
    config = json.loads(page.split('id="map-config" type="application/json">')[1].split("<")[0])
    assert config["team"] == "alpha"
    assert config["socketPath"] == "/ws/teams/alpha/"
    assert config["staleAfter"] == 30
    assert "/static/vendor/leaflet/leaflet.js" in page
    assert "unpkg" not in page and "cdn" not in page.lower()


def test_map_of_another_team_is_forbidden_and_unknown_is_not_found(client, world):
    client.force_login(world.ann)
    assert client.get("/teams/bravo/").status_code == 403
    assert client.get("/teams/nope/").status_code == 404
    client.force_login(world.root)
    assert client.get("/teams/bravo/").status_code == 200


def test_logout_is_a_post(client, world):
    client.force_login(world.ann)
    assert client.post("/accounts/logout/").status_code == 302
    assert client.get("/").status_code == 302


# ---------------------------------------------------------------- workers page and phone setup


def setup_url(worker) -> str:
    return f"/teams/{worker.team.slug}/workers/{worker.pk}/setup/"


def owntracks_config_of(page: str) -> dict:
    link = html.unescape(re.search(r'id="owntracks-link" href="([^"]+)"', page).group(1))
    (inline,) = parse_qs(urlsplit(link).query)["inline"]
    return json.loads(base64.b64decode(inline))


def test_team_pages_need_a_login(client, world):
    for url in ("/teams/alpha/workers/", setup_url(world.a1)):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    assert client.post(setup_url(world.a1)).status_code == 302
    assert worker_get_by_token(token=world.tokens[world.a1.id]) == world.a1  # nothing issued


def test_workers_page_is_for_the_teams_managers_and_superusers(client, world):
    client.force_login(world.bob)
    assert client.get("/teams/alpha/workers/").status_code == 403
    assert client.get("/teams/nope/workers/").status_code == 404
    client.force_login(world.ann)
    page = client.get("/teams/alpha/workers/").content.decode()
    assert "Alice" in page and "Arno" in page and "Bea" not in page
    assert setup_url(world.a1) in page
    client.force_login(world.root)
    assert client.get("/teams/bravo/workers/").status_code == 200


def test_the_team_list_and_the_map_link_the_workers_page(client, world):
    client.force_login(world.ann)
    assert 'href="/teams/alpha/workers/"' in client.get("/").content.decode()
    assert 'href="/teams/alpha/workers/"' in client.get("/teams/alpha/").content.decode()


def test_adding_a_worker(client, world):
    client.force_login(world.ann)
    response = client.post("/teams/alpha/workers/", {"name": "  Nia  "}, follow=True)
    assert response.redirect_chain == [("/teams/alpha/workers/", 302)]
    worker = Worker.objects.get(name="Nia")
    assert worker.team == world.alpha and worker.has_token is False  # the setup issues it
    assert "Added Nia" in response.content.decode()
    response = client.post("/teams/alpha/workers/", {"name": "   "})
    assert response.status_code == 200 and 'aria-invalid="true"' in response.content.decode()
    assert Worker.objects.count() == 4
    client.force_login(world.bob)
    assert client.post("/teams/alpha/workers/", {"name": "Intruder"}).status_code == 403
    assert not Worker.objects.filter(name="Intruder").exists()


def test_removing_a_worker_asks_first_and_stays_within_the_team(
    client, world, monkeypatch, django_capture_on_commit_callbacks
):
    closed = []
    monkeypatch.setattr(signals, "close_worker_sockets", closed.append)
    client.force_login(world.ann)
    remove = f"/teams/alpha/workers/{world.a2.pk}/remove/"
    assert "Remove Arno?" in client.get(remove).content.decode()
    assert Worker.objects.filter(pk=world.a2.pk).exists()  # asking removes nothing
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(remove)
    assert response.status_code == 302 and response["Location"] == "/teams/alpha/workers/"
    assert not Worker.objects.filter(pk=world.a2.pk).exists()
    assert closed == [world.a2.pk]

    # Another team's worker, by id, through either team's URL: nothing happens.
    assert client.post(f"/teams/alpha/workers/{world.b1.pk}/remove/").status_code == 404
    assert client.post(f"/teams/bravo/workers/{world.b1.pk}/remove/").status_code == 403
    assert client.get(f"/teams/alpha/workers/{world.b1.pk}/remove/").status_code == 404
    assert Worker.objects.filter(pk=world.b1.pk).exists()


def test_setup_page_get_issues_nothing(client, world):
    client.force_login(world.ann)
    response = client.get(setup_url(world.a1))
    page = response.content.decode()
    assert response.status_code == 200
    assert "Issue a new credential and show the setup" in page
    assert "replaces" in page  # Alice has a credential: the page says the old one stops
    assert worker_get_by_token(token=world.tokens[world.a1.id]) == world.a1
    assert not Enrolment.objects.exists()


def test_setup_post_issues_a_working_credential_shown_once(client, world):
    client.force_login(world.ann)
    response = client.post(setup_url(world.a1))
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    (token,) = re.findall(r'<code class="device-token">([^<]+)</code>', page)
    assert worker_get_by_token(token=token) == world.a1
    assert worker_get_by_token(token=world.tokens[world.a1.id]) is None
    assert token not in str(client.session.items()) and token not in response.cookies.output()

    # Traccar Client: the server URL from the request, the token as its identifier.
    assert '<code id="traccar-server-url">http://testserver/osmand/</code>' in page
    # OwnTracks: HTTP mode to our endpoint, the token as its password.
    config = owntracks_config_of(page)
    assert config["_type"] == "configuration" and config["mode"] == 3
    assert config["url"] == "http://testserver/owntracks/"
    assert config["auth"] is True and config["password"] == token
    assert (config["username"], config["tid"], config["monitoring"]) == (
        f"worker-{world.a1.pk}",
        "AL",
        2,  # move mode: a fix every locatorInterval seconds
    )
    assert config["locatorInterval"] == 10
    # Browser: the code in the fragment, redeemable exactly once.
    link = re.search(r'<code id="enrolment-link"[^>]*>([^<]+)</code>', page).group(1)
    assert link.startswith("http://testserver/track/#enrol=")
    code = link.split("#enrol=")[1]
    assert services.enrolment_redeem(code=code) == (world.a1, token)
    assert services.enrolment_redeem(code=code) is None
    # Three QR codes, drawn inline: no image is fetched from anywhere.
    assert page.count('<svg viewBox="') == 3 and page.count('class="qr"') == 3
    assert "<img" not in page
    assert "expires in 7 days" in page


def test_setup_uses_the_scheme_and_host_of_the_request(client, world, settings):
    settings.ALLOWED_HOSTS = ["track.example.com"]
    client.force_login(world.ann)
    page = client.post(
        setup_url(world.a1), HTTP_HOST="track.example.com", HTTP_X_FORWARDED_PROTO="https"
    ).content.decode()
    assert "https://track.example.com/osmand/" in page
    assert owntracks_config_of(page)["url"] == "https://track.example.com/owntracks/"
    assert "https://track.example.com/track/#enrol=" in page
    assert "plain HTTP" not in page


def test_setup_is_only_for_the_workers_own_team(client, world):
    client.force_login(world.bob)
    assert client.post(setup_url(world.a1)).status_code == 403
    assert client.get(setup_url(world.a1)).status_code == 403
    client.force_login(world.ann)
    assert client.post(f"/teams/alpha/workers/{world.b1.pk}/setup/").status_code == 404
    assert client.post("/teams/alpha/workers/999999/setup/").status_code == 404
    for worker in (world.a1, world.b1):
        assert worker_get_by_token(token=world.tokens[worker.id]) == worker
    assert not Enrolment.objects.exists()
    client.force_login(world.root)
    assert client.post(setup_url(world.b1)).status_code == 200


def test_setup_and_removal_need_the_csrf_token(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.ann)
    assert client.post(setup_url(world.a1)).status_code == 403
    assert client.post(f"/teams/alpha/workers/{world.a2.pk}/remove/").status_code == 403
    assert client.post("/teams/alpha/workers/", {"name": "Nia"}).status_code == 403
    assert worker_get_by_token(token=world.tokens[world.a1.id]) == world.a1
    assert Worker.objects.filter(pk=world.a2.pk).exists()

    page = client.get(setup_url(world.a1)).content.decode()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    assert client.post(setup_url(world.a1), {"csrfmiddlewaretoken": csrf}).status_code == 200
    assert worker_get_by_token(token=world.tokens[world.a1.id]) is None


def test_setup_links_follow_public_url_behind_a_tls_terminator(client, world, settings):
    """nginx tells Django the scheme it saw (http, behind a TLS terminator); the phones must
    still be given https:// addresses."""
    settings.TEAMTRACK_PUBLIC_URL = "https://track.example.com"
    client.force_login(world.ann)
    page = client.post(setup_url(world.a1), headers={"X-Forwarded-Proto": "http"}).content.decode()
    assert '<code id="traccar-server-url">https://track.example.com/osmand/</code>' in page
    assert owntracks_config_of(page)["url"] == "https://track.example.com/owntracks/"
    assert "https://track.example.com/track/#enrol=" in page
    assert "http://testserver" not in page
