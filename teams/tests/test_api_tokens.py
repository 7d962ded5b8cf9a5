"""Personal API tokens: the page that creates (shown once, kept hashed), lists and revokes them,
and the selectors the API authenticates with."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from teams import selectors, services
from teams.models import ApiToken

pytestmark = pytest.mark.django_db

PAGE = "/account/api-tokens/"


def revoke_url(api_token) -> str:
    return f"/account/api-tokens/{api_token.pk}/revoke/"


def token_on(page: str) -> str:
    return re.search(r'id="new-token"[^>]*>([^<]+)<', page).group(1)


def test_the_page_and_revoking_need_a_login(client, world):
    api_token, _ = services.api_token_create(user=world.ann, name="script")
    for response in (
        client.get(PAGE),
        client.post(PAGE, {"name": "x"}),
        client.post(revoke_url(api_token)),
    ):
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/")
    assert ApiToken.objects.count() == 1  # nothing created, nothing revoked


def test_creating_shows_the_token_once_and_keeps_only_its_hash(client, world):
    client.force_login(world.ann)
    response = client.post(PAGE, {"name": "  nightly export  "})
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    token = token_on(response.content.decode())
    assert token.startswith("tta_") and len(token) > 40
    api_token = ApiToken.objects.get()
    assert api_token.user == world.ann and api_token.name == "nightly export"
    assert api_token.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in {str(value) for value in vars(api_token).values()}
    # Never again: not on the list, not in the session, not in a message.
    page = client.get(PAGE)
    assert token not in page.content.decode() and "nightly export" in page.content.decode()
    assert "no-store" not in page.get("Cache-Control", "")
    assert token not in str(dict(client.session))
    assert selectors.user_for_api_token(token=token) == world.ann


def test_a_token_needs_a_name(client, world):
    client.force_login(world.ann)
    for name in ("", "   ", "x" * 101):
        response = client.post(PAGE, {"name": name})
        assert response.status_code == 400
        assert 'aria-invalid="true"' in response.content.decode()
        assert 'id="new-token"' not in response.content.decode()
    assert not ApiToken.objects.exists()


def test_the_list_shows_only_your_own_tokens(client, world):
    services.api_token_create(user=world.ann, name="ann's script")
    services.api_token_create(user=world.bob, name="bob's script")
    client.force_login(world.ann)
    page = client.get(PAGE).content.decode()
    assert "ann&#x27;s script" in page and "bob&#x27;s script" not in page
    assert "Never" in page  # not used yet


def test_revoking_stops_the_token(client, world):
    api_token, token = services.api_token_create(user=world.ann, name="script")
    client.force_login(world.ann)
    response = client.post(revoke_url(api_token), follow=True)
    assert response.redirect_chain == [(PAGE, 302)]
    assert "Revoked" in response.content.decode()
    assert not ApiToken.objects.exists()
    assert selectors.user_for_api_token(token=token) is None
    assert client.post(revoke_url(api_token)).status_code == 404  # already gone


def test_another_users_token_cannot_be_revoked(client, world):
    bobs, token = services.api_token_create(user=world.bob, name="bob's")
    client.force_login(world.ann)
    assert client.post(revoke_url(bobs)).status_code == 404
    assert services.api_token_revoke(user=world.ann, token_id=bobs.pk) is False
    assert selectors.user_for_api_token(token=token) == world.bob
    client.force_login(world.root)  # not even a superuser, through this page
    assert client.post(revoke_url(bobs)).status_code == 404
    assert ApiToken.objects.filter(pk=bobs.pk).exists()


def test_revoking_is_a_post_with_a_csrf_token(world):
    api_token, _ = services.api_token_create(user=world.ann, name="script")
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.ann)
    assert client.get(revoke_url(api_token)).status_code == 405
    assert client.post(revoke_url(api_token)).status_code == 403
    assert client.post(PAGE, {"name": "no csrf"}).status_code == 403
    assert ApiToken.objects.count() == 1


def test_the_header_links_the_page(client, world):
    client.force_login(world.ann)
    assert f'href="{PAGE}"' in client.get("/").content.decode()


def test_an_inactive_users_token_opens_nothing(world):
    _, token = services.api_token_create(user=world.ann, name="script")
    world.ann.is_active = False
    world.ann.save()
    assert selectors.user_for_api_token(token=token) is None
    assert selectors.user_for_api_token(token="tta_unknown") is None


def test_last_use_is_written_at_most_once_a_minute(world):
    api_token, _ = services.api_token_create(user=world.ann, name="script")
    now = timezone.now()
    services.api_token_touch(api_token=api_token, now=now)
    services.api_token_touch(api_token=api_token, now=now + timedelta(seconds=59))
    assert ApiToken.objects.get().last_used_at == now
    services.api_token_touch(api_token=api_token, now=now + timedelta(seconds=60))
    assert ApiToken.objects.get().last_used_at == now + timedelta(seconds=60)
