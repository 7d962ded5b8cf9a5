"""A manager adds a worker and sets up their phone, in Debian's Chromium against a real daphne."""

import re
import struct

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import OUTPUT, TeamTrack

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(60)]

SCREENSHOT = OUTPUT / "screenshot-setup.png"
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A daphne of this module's own, with one small team (the map tests' pool is larger)."""
    site = TeamTrack(tmp_path_factory.mktemp("setup-site"))
    site.pool = site.provision(teams=1, workers=2, prefix="crew")
    site.serve()
    yield site
    site.stop()


def test_a_manager_adds_a_worker_and_sets_up_a_phone(site, browsing):
    team = site.pool[0]
    manager = team["managers"][0]
    page = browsing.open(site, manager, "/", viewport=VIEWPORT)
    page.get_by_role("link", name="Workers").click()
    expect(page).to_have_url(f"{site.base}/teams/{team['slug']}/workers/")
    expect(page.get_by_role("heading", name="Workers", exact=True)).to_be_visible()

    page.get_by_label("Name").fill("Ana Ruiz")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_role("status")).to_contain_text("Added Ana Ruiz")
    row = page.get_by_role("row").filter(has=page.get_by_role("rowheader", name="Ana Ruiz"))
    expect(row.get_by_role("cell").nth(1)).to_have_text("None")  # no credential yet

    row.get_by_role("link", name="Set up a phone").click()
    expect(page.get_by_role("heading", name="Set up Ana Ruiz's phone")).to_be_visible()
    page.get_by_role("button", name="Issue a new credential and show the setup").click()

    expect(page.get_by_role("heading", name="Ana Ruiz's phone setup")).to_be_visible()
    for section in ("Traccar Client", "OwnTracks", "Browser, no app"):
        expect(page.get_by_role("heading", name=section, exact=True)).to_be_visible()
    codes = page.locator("svg.qr")
    expect(codes).to_have_count(3)
    for index in range(3):
        expect(codes.nth(index)).to_be_visible()
        box = codes.nth(index).bounding_box()
        assert box["width"] >= 150 and box["width"] == box["height"]  # large enough to scan
    token = page.locator("code.device-token").inner_text()
    assert token.startswith("tt_")
    expect(page.locator("#traccar-server-url")).to_have_text(f"{site.base}/osmand/")
    owntracks = page.get_by_role("link", name="Configure OwnTracks")
    expect(owntracks).to_have_attribute(
        "href", re.compile(r"^owntracks:///config\?inline=\S{300,}$")
    )
    expect(page.locator("#enrolment-link")).to_contain_text(f"{site.base}/track/#enrol=")
    # Nothing of the credential is in the page's URL or history entry.
    assert token not in page.url and page.url.endswith("/setup/")

    page.mouse.move(0, 0)  # no hover effects in the picture
    page.screenshot(path=SCREENSHOT, full_page=True)
    png = SCREENSHOT.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width == VIEWPORT["width"] and height >= VIEWPORT["height"]
