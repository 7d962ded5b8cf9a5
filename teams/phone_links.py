"""What each phone app is told: the links and settings of a worker's phone setup.

Built from the site's origin (scheme and host as the manager reached it) and a PhoneSetup, and
shown only on the page that issued it. The device endpoints live in tracking/ (the lead's
`/osmand/`, `/owntracks/` and `/track/`); their paths are named here, not imported, because the
domain never imports the live side.
"""

import base64
import json
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

from teams.models import Worker
from teams.services import PhoneSetup

OSMAND_PATH = "/osmand/"
OWNTRACKS_PATH = "/owntracks/"
TRACK_PATH = "/track/"

# Traccar Client settings for live tracking: GPS-grade fixes every 10 s whether or not the phone
# moved, kept on the phone while offline and sent later. The keys are the app's own preference
# names, which its QR code scanner reads from a link's query (traccar/traccar-client,
# lib/preferences.dart and the QR screen). Its defaults would undo that: fixes at most every
# 30 s (fastest_interval, on a par with the map's stale time) and none while the phone stands
# still (stop_detection), which would show a waiting courier offline.
TRACCAR_SETTINGS = {
    "accuracy": "high",
    "interval": "10",
    "fastest_interval": "10",
    "distance": "0",
    "stop_detection": "false",
    "buffer": "true",
}

OWNTRACKS_DEVICE_ID = "phone"


@dataclass(frozen=True)
class PhoneLinks:
    """Everything the setup page shows besides the token itself (each of these holds it)."""

    traccar_server_url: str
    traccar_config_link: str = field(repr=False)
    owntracks_config: dict = field(repr=False)
    owntracks_link: str = field(repr=False)
    enrolment_link: str = field(repr=False)


def phone_links(*, origin: str, worker: Worker, setup: PhoneSetup) -> PhoneLinks:
    config = owntracks_config(origin=origin, worker=worker, token=setup.token)
    return PhoneLinks(
        traccar_server_url=traccar_server_url(origin),
        traccar_config_link=traccar_config_link(origin=origin, token=setup.token),
        owntracks_config=config,
        owntracks_link=owntracks_config_link(config),
        enrolment_link=enrolment_link(origin=origin, code=setup.enrolment_code),
    )


def traccar_server_url(origin: str) -> str:
    return f"{origin}{OSMAND_PATH}"


def traccar_config_link(*, origin: str, token: str) -> str:
    """Return the link Traccar Client's QR scanner reads: the server URL, with the device
    identifier and settings in its query. The app stores them; it never requests this URL."""
    return f"{traccar_server_url(origin)}?" + urlencode({"id": token, **TRACCAR_SETTINGS})


def owntracks_config(*, origin: str, worker: Worker, token: str) -> dict:
    """Return an OwnTracks configuration for HTTP mode (owntracks/booklet, docs/tech/json.md)."""
    return {
        "_type": "configuration",
        "mode": 3,  # private HTTP
        "url": f"{origin}{OWNTRACKS_PATH}",
        "auth": True,
        # The server reads only the password (the token); the user name labels the phone.
        "username": f"worker-{worker.pk}",
        "password": token,
        "deviceId": OWNTRACKS_DEVICE_ID,
        "tid": tracker_id(worker.name),
        # Move mode: a fix every locatorInterval seconds. The default, significant changes,
        # reports every few hundred metres or minutes: a worker would show stale, then offline.
        "monitoring": 2,
        "locatorInterval": 10,
        "moveModeLocatorInterval": 10,  # the Android app's name for it
        "locatorPriority": 3,  # Android: GPS accuracy
    }


def owntracks_config_link(config: dict) -> str:
    """Return the owntracks:///config?inline= link that imports `config` in the app."""
    inline = base64.b64encode(json.dumps(config, separators=(",", ":")).encode()).decode()
    # Percent-encoded: the apps decode the query, and a bare "+" of base64 would read as a space.
    return f"owntracks:///config?inline={quote(inline, safe='')}"


def enrolment_link(*, origin: str, code: str) -> str:
    # In the fragment: browsers never send it to the server, so no log or proxy ever sees it.
    return f"{origin}{TRACK_PATH}#enrol={code}"


def tracker_id(name: str) -> str:
    """Two letters for OwnTracks' map bubble: the initials of the first two words, else the
    first two letters of the name ("Ana Ruiz" -> "AR", "Bea" -> "BE")."""
    words = [
        "".join(c for c in word if unicodedata.category(c)[0] in "LN") for word in name.split()
    ]
    words = [word for word in words if word]
    if len(words) >= 2:
        letters = words[0][0] + words[1][0]
    else:
        letters = (words[0] if words else "")[:2]
    return letters.upper() or "??"
