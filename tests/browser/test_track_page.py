"""The browser tracking page (/track/) in Debian's Chromium, with Playwright's geolocation
emulation, against a real daphne: enrolment from a one-time link, positions on a manager's map,
a queue that survives going offline, and the end of an enrolment.

Going offline: `context.set_offline(True)` makes Chromium report the network gone (navigator.onLine
false, an `offline` event) and refuse new connections, but it does not close a WebSocket already
open. The page itself closes its socket on the `offline` event (a phone's socket can otherwise sit
half-open for minutes) and queues until `online`; so these tests take the socket down exactly as a
phone's browser would, without stopping the server.
"""

import json
import re
import urllib.request

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OUTPUT, PHONE, TeamTrack
from tests.browser.test_map import expect_live, manager, map_path, team_name

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(60)]

START = {"latitude": 41.3870, "longitude": 2.1700}
OFFLINE_WALK = [{"latitude": 41.3870 + step * 0.0005, "longitude": 2.1710} for step in range(1, 5)]


@pytest.fixture(scope="module")
def track_site(tmp_path_factory):
    """One daphne for the module, with a few small teams: each test takes its own."""
    site = TeamTrack(tmp_path_factory.mktemp("track-site"))
    site.pool = site.provision(teams=4, workers=2, prefix="track")
    site.serve()
    yield site
    site.stop()


@pytest.fixture
def team(track_site):
    if not track_site.pool:
        pytest.fail("the pool of teams is used up: provision more in `track_site`")
    return track_site.pool.pop(0)


def worker_command(site: TeamTrack, worker: dict, call: str) -> str:
    """Run `services.<call>` on the worker in the site's database; return what it printed."""
    script = (
        "from teams import services; from teams.models import Worker; "
        f"worker = Worker.objects.get(pk={worker['id']}); {call}"
    )
    return site.manage("shell", "--no-imports", "-c", script).strip()


def enrolment_link(site: TeamTrack, worker: dict) -> str:
    """Issue the worker's phone setup; return the page's path with its one-time fragment."""
    code = worker_command(
        site, worker, "print(services.worker_setup_issue(worker=worker).enrolment_code)"
    )
    assert re.fullmatch(r"[A-Za-z0-9_-]{20,}", code), code
    return f"/track/#enrol={code}"


class Phone:
    """The tracking page in a phone-sized context of its own, with emulated geolocation, and
    every frame its sockets send and receive, as Chromium saw them on the wire."""

    def __init__(self, browsing, site: TeamTrack, path: str, *, position: dict = START):
        self.context = browsing.browser.new_context(
            viewport=PHONE,
            base_url=site.base,
            geolocation=position,
            permissions=["geolocation"],
            service_workers="allow",
        )
        browsing.contexts.append(self.context)
        self.sent: list[dict] = []
        self.received: list[dict] = []
        self.page = self.context.new_page()
        browsing.watch(self.context, self.page)
        self.page.on("websocket", self._watch)
        response = self.page.goto(path)
        assert response.headers.get("content-security-policy"), f"{path}: no policy sent"

    def _watch(self, socket) -> None:
        socket.on("framesent", lambda payload: self.sent.append(json.loads(payload)))
        socket.on("framereceived", lambda payload: self.received.append(json.loads(payload)))

    def locator(self, selector: str):
        return self.page.locator(selector)

    @property
    def state(self):
        return self.page.locator("#track-state")

    @property
    def queue(self):
        return self.page.locator("#track-queue")

    def move(self, position: dict) -> None:
        self.context.set_geolocation(position)

    def stored_queue(self) -> list[dict]:
        """The positions waiting in IndexedDB."""
        return self.page.evaluate("() => window.teamtrack.storage.oldest(1000)")


def marker_at(map_page, worker: dict, position: dict) -> None:
    """Wait until the manager's map shows the worker's marker at this position."""
    map_page.wait_for_function(
        """([id, lat, lng]) => {
          const marker = window.teamtrack.markers.get(id);
          if (!marker) return false;
          const point = marker.getLatLng();
          return Math.abs(point.lat - lat) < 1e-9 && Math.abs(point.lng - lng) < 1e-9;
        }""",
        arg=[worker["id"], position["latitude"], position["longitude"]],
    )


def shown(position: dict) -> str:
    """How the page writes a position."""
    return f"{position['latitude']:.5f}, {position['longitude']:.5f}"


def counters(site: TeamTrack) -> dict[str, float]:
    """The server's counts of positions taken, and of positions ignored as resends."""
    with urllib.request.urlopen(f"{site.base}/metrics", timeout=5) as response:
        text = response.read().decode()

    def value(pattern: str) -> float:
        match = re.search(rf"^{pattern} (\S+)$", text, re.M)
        return float(match.group(1)) if match else 0.0

    return {
        "accepted": value("teamtrack_positions_accepted_total"),
        "duplicate": value(r'teamtrack_positions_rejected_total\{reason="duplicate"\}'),
    }


# ---------------------------------------------------------------- tracking, offline and back


def test_positions_reach_the_map_and_a_queue_kept_offline_arrives_once_in_order(
    track_site, team, browsing
):
    worker = team["workers"][0]
    map_page = browsing.open(track_site, manager(team), map_path(team))
    expect_live(map_page)
    phone = Phone(browsing, track_site, enrolment_link(track_site, worker))
    expect(phone.locator("#track-identity")).to_have_text(f"{worker['name']} · {team_name(team)}")
    expect(phone.state).to_have_attribute("data-state", "stopped")

    phone.page.get_by_role("button", name="Start tracking").click()
    expect(phone.state).to_have_attribute("data-state", "tracking")
    expect(phone.page.get_by_role("button", name="Stop tracking")).to_be_visible()
    marker_at(map_page, worker, START)
    expect(phone.locator("#track-last-acked")).to_contain_text(shown(START))
    expect(phone.queue).to_have_attribute("data-count", "0")
    assert phone.sent[0] == {"type": "auth", "token": phone.sent[0]["token"]}

    # Offline: the page closes its socket and queues every position in IndexedDB.
    acked_online = int(phone.locator("#track-last-acked").get_attribute("data-seq"))
    before = counters(track_site)
    phone.context.set_offline(True)
    expect(phone.state).to_have_attribute("data-state", "offline")
    frames_before = len(phone.sent)
    for count, position in enumerate(OFFLINE_WALK, start=1):
        phone.move(position)
        expect(phone.queue).to_have_attribute("data-count", str(count))
    expect(phone.state).to_have_text(f"Offline — {len(OFFLINE_WALK)} positions queued")
    queued = phone.stored_queue()
    assert [(entry["lat"], entry["lng"]) for entry in queued] == [
        (position["latitude"], position["longitude"]) for position in OFFLINE_WALK
    ]
    seqs = [entry["seq"] for entry in queued]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] > acked_online
    assert len(phone.sent) == frames_before, "nothing may go out while offline"
    map_page.wait_for_timeout(300)  # a few flush windows: nothing of the walk reached the map
    marker_at(map_page, worker, START)

    # Back online: a new socket, the token, then the queue as one batch, oldest first.
    phone.context.set_offline(False)
    expect(phone.queue).to_have_attribute("data-count", "0")
    expect(phone.state).to_have_attribute("data-state", "tracking")
    marker_at(map_page, worker, OFFLINE_WALK[-1])
    expect(phone.locator("#track-last-acked")).to_contain_text(shown(OFFLINE_WALK[-1]))
    expect(phone.locator("#track-last-acked")).to_have_attribute("data-seq", str(seqs[-1]))
    assert phone.stored_queue() == []
    # The picture in README.md (written there by `make screenshot`).
    phone.page.screenshot(path=OUTPUT / "screenshot-track.png")

    resent = phone.sent[frames_before:]
    assert resent[0]["type"] == "auth"
    batches = [frame for frame in resent if frame["type"] == "batch"]
    delivered = [position for batch in batches for position in batch["positions"]]
    assert [position["seq"] for position in delivered] == seqs, (
        "each queued position once, in order"
    )
    assert [(position["lat"], position["lng"]) for position in delivered] == [
        (entry["lat"], entry["lng"]) for entry in queued
    ]
    assert {"type": "ack", "seq": seqs[-1]} in phone.received
    # The server took every one of them, once: none was dropped as a resend, none refused.
    after = counters(track_site)
    assert after["accepted"] - before["accepted"] == len(OFFLINE_WALK)
    assert after["duplicate"] == before["duplicate"]
    assert not [frame for frame in phone.received if frame["type"] == "error"]

    # Stop: the socket closes and the manager sees the worker go offline.
    phone.page.get_by_role("button", name="Stop tracking").click()
    expect(phone.state).to_have_attribute("data-state", "stopped")
    expect(map_page.locator(f'#worker-list li[data-worker-id="{worker["id"]}"]')).to_have_attribute(
        "data-state", "offline"
    )


# ---------------------------------------------------------------- the enrolment link


def test_the_link_leaves_no_trace_works_once_and_the_page_opens_offline(track_site, team, browsing):
    worker = team["workers"][0]
    link = enrolment_link(track_site, worker)
    code = link.rsplit("=", 1)[1]
    phone = Phone(browsing, track_site, link)
    expect(phone.locator("#track-identity")).to_have_text(f"{worker['name']} · {team_name(team)}")
    expect(phone.locator("#track-notice")).to_contain_text(f"enrolled as {worker['name']}")

    # The fragment is gone from the address and from every entry of the tab's history.
    assert phone.page.url == f"{track_site.base}/track/"
    assert code not in phone.page.evaluate("() => location.href")
    history = phone.context.new_cdp_session(phone.page).send("Page.getNavigationHistory")
    urls = [entry["url"] for entry in history["entries"]]
    assert urls[-1] == f"{track_site.base}/track/"
    assert not [url for url in urls if "enrol" in url or code in url], urls
    # The token is kept in IndexedDB, and nothing in localStorage.
    stored = phone.page.evaluate("() => window.teamtrack.storage.get('enrolment')")
    assert stored["worker"] == {"id": worker["id"], "name": worker["name"]}
    assert stored["token"].startswith("tt_")
    assert phone.page.evaluate("() => localStorage.length") == 0

    # seq goes on across a reload; tracking resumes by itself.
    phone.page.get_by_role("button", name="Start tracking").click()
    expect(phone.locator("#track-last-acked")).to_contain_text(shown(START))
    first_seq = int(phone.locator("#track-last-acked").get_attribute("data-seq"))
    phone.page.reload()
    expect(phone.state).to_have_attribute("data-state", "tracking")
    moved = {"latitude": START["latitude"] + 0.001, "longitude": START["longitude"]}
    phone.move(moved)
    expect(phone.locator("#track-last-acked")).to_contain_text(shown(moved))
    assert int(phone.locator("#track-last-acked").get_attribute("data-seq")) > first_seq

    # The service worker has the page: it opens without a network, still enrolled.
    phone.page.wait_for_function("() => navigator.serviceWorker.controller !== null")
    phone.context.set_offline(True)
    phone.page.reload()
    expect(phone.locator("#track-identity")).to_have_text(f"{worker['name']} · {team_name(team)}")
    # (A page loaded offline may be told navigator.onLine is true: its connection attempts fail
    # and it says "reconnecting", offline all the same.)
    expect(phone.state).to_have_attribute("data-state", re.compile("^(offline|reconnecting)$"))
    expect(phone.state).to_contain_text("Offline — 1 position queued")
    phone.context.set_offline(False)

    # The same link on another phone: used up, said plainly, and removed from the address too.
    other = Phone(browsing, track_site, link)
    expect(other.locator("#track-notice")).to_contain_text(
        "This enrolment link was already used, has expired or was withdrawn."
    )
    expect(other.state).to_have_attribute("data-state", "unenrolled")
    expect(other.page.get_by_role("button", name="Start tracking")).to_be_hidden()
    assert other.page.url == f"{track_site.base}/track/"
    assert other.page.evaluate("() => window.teamtrack.storage.get('enrolment')") is None


def test_a_phone_whose_token_was_withdrawn_says_it_is_no_longer_enrolled(
    track_site, team, browsing
):
    worker = team["workers"][0]
    phone = Phone(browsing, track_site, enrolment_link(track_site, worker))
    phone.page.get_by_role("button", name="Start tracking").click()
    expect(phone.locator("#track-last-acked")).to_contain_text(shown(START))

    worker_command(track_site, worker, "services.worker_token_revoke(worker=worker)")
    # The command's own process cannot reach daphne's in-memory channel layer to close the
    # socket at once, so the page finds out when it next connects: after a network change.
    phone.context.set_offline(True)
    expect(phone.state).to_have_attribute("data-state", "offline")
    phone.context.set_offline(False)

    expect(phone.state).to_have_attribute("data-state", "revoked")
    expect(phone.state).to_have_text("No longer enrolled")
    expect(phone.locator("#track-notice")).to_contain_text("This phone is no longer enrolled")
    expect(phone.page.get_by_role("button", name="Stop tracking")).to_be_hidden()
    expect(phone.page.get_by_role("button", name="Start tracking")).to_be_hidden()
    assert phone.page.evaluate("() => window.teamtrack.storage.get('enrolment')") is None
    sockets = len([frame for frame in phone.sent if frame["type"] == "auth"])
    phone.page.wait_for_timeout(2000)  # longer than the first retries' backoff
    assert len([frame for frame in phone.sent if frame["type"] == "auth"]) == sockets
