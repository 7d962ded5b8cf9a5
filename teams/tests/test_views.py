"""Pages: login, the team list and the map, each limited to the teams a user manages."""

import json

import pytest

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
