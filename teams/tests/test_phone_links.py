"""The links that configure each phone app, built from the site's origin and a new setup."""

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from teams.models import Worker
from teams.phone_links import phone_links, tracker_id
from teams.services import PhoneSetup

ORIGIN = "https://track.example.com"
SETUP = PhoneSetup(token="tt_abc+/=", enrolment_code="code-123")


def test_traccar_link_is_the_server_url_with_the_identifier_and_settings():
    links = phone_links(origin=ORIGIN, worker=Worker(pk=7, name="Ana Ruiz"), setup=SETUP)
    assert links.traccar_server_url == "https://track.example.com/osmand/"
    parts = urlsplit(links.traccar_config_link)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == links.traccar_server_url
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert query == {
        "id": "tt_abc+/=",
        "accuracy": "high",
        "interval": "10",
        "fastest_interval": "10",  # the app's default, 30 s, would make workers flicker stale
        "distance": "0",
        "stop_detection": "false",  # its default stops reporting while the phone stands still
        "buffer": "true",
    }


def test_owntracks_link_carries_its_http_configuration_percent_encoded():
    links = phone_links(origin=ORIGIN, worker=Worker(pk=7, name="Ana Ruiz"), setup=SETUP)
    parts = urlsplit(links.owntracks_link)
    assert (parts.scheme, parts.netloc, parts.path) == ("owntracks", "", "/config")
    assert "+" not in parts.query and "/" not in parts.query
    (inline,) = parse_qs(parts.query)["inline"]
    config = json.loads(base64.b64decode(inline, validate=True))
    assert config == links.owntracks_config
    assert config["_type"] == "configuration" and config["mode"] == 3
    assert config["url"] == "https://track.example.com/owntracks/"
    assert (config["auth"], config["password"]) == (True, "tt_abc+/=")
    assert (config["username"], config["deviceId"], config["tid"]) == ("worker-7", "phone", "AR")


def test_the_enrolment_code_travels_in_the_fragment():
    links = phone_links(origin=ORIGIN, worker=Worker(pk=7, name="Ana"), setup=SETUP)
    assert links.enrolment_link == "https://track.example.com/track/#enrol=code-123"
    assert "code-123" not in urlsplit(links.enrolment_link).query


def test_repr_shows_no_secret():
    links = phone_links(origin=ORIGIN, worker=Worker(pk=7, name="Ana"), setup=SETUP)
    assert "tt_abc" not in repr(links) and "code-123" not in repr(links)


@pytest.mark.parametrize(
    "name, tid",
    [
        ("Ana Ruiz", "AR"),
        ("bea", "BE"),
        ("  Zoë  van Dijk ", "ZV"),
        ("J. (Jo) K", "JJ"),
        ("", "??"),
    ],
)
def test_tracker_ids_are_two_letters_of_the_name(name, tid):
    assert tracker_id(name) == tid
