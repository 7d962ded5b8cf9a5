"""Browser tests: Debian's Chromium, driven by Playwright, against real TeamTrack processes.

daphne runs with its own SQLite database (the e2e `Server`), teams come from the `provision`
command, devices are real worker sockets on an asyncio loop of their own thread (Playwright's
sync API owns the test's thread), and every page gets a probe that records the frames the map
receives and how long the page takes to apply them.
"""

import asyncio
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import websockets
from playwright.sync_api import sync_playwright

from tests.e2e.clients import Device
from tests.e2e.conftest import PASSWORD, ROOT, Server, login, provision
from tracking.simulator import run_device

CHROMIUM = Path("/usr/bin/chromium")
# Where the tests write their pictures and figures. `make browser` and `make screenshot` set
# TEAMTRACK_WRITE_DOCS=1 to refresh the committed ones in docs/; other runs (make test, CI)
# write beside them in a temporary folder, so a test run never dirties the work tree.
OUTPUT = (
    ROOT / "docs"
    if os.environ.get("TEAMTRACK_WRITE_DOCS")
    else Path(tempfile.gettempdir()) / "teamtrack-browser"
)
OUTPUT.mkdir(exist_ok=True)
# A closed network: nothing may download, update, sync or phone home, and there is no GPU.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Nothing listens on port 9: tiles fail at once instead of waiting on DNS without internet, and
# the page takes its "no tiles" path, as it does on a closed network.
NO_TILES = "http://127.0.0.1:9/{z}/{x}/{y}.png"
STALE_AFTER_SECONDS = 2  # short, so that a quiet worker turns stale within a test

# Installed before the page's own scripts. Records the type of every frame the page receives;
# for each positions frame its size, how long the page's handler took to apply it, and the time
# from its arrival until the next animation frame had run (Leaflet's canvas redraw and the list
# patch happen there); the intervals between animation frames; and long tasks (over 50 ms).
PROBE = """
(() => {
  const probe = {
    frames: [], bytes: [], positions: [], applyMs: [], drawnMs: [], rafMs: [], longTasks: [],
  };
  probe.reset = () => {
    for (const key of Object.keys(probe)) if (Array.isArray(probe[key])) probe[key].length = 0;
  };
  window.__probe = probe;
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      // The page sets onmessage; run it from our own listener so that it can be timed.
      let onmessage = null;
      Object.defineProperty(this, "onmessage", {
        get: () => onmessage,
        set: (handler) => { onmessage = handler; },
      });
      this.addEventListener("message", (event) => {
        const start = performance.now();
        try {
          if (onmessage) onmessage.call(this, event);
        } finally {
          const match = /"type":\\s*"(\\w+)"/.exec(String(event.data).slice(0, 40));
          const type = match ? match[1] : null;
          probe.frames.push(type);
          if (type === "positions") {
            probe.applyMs.push(performance.now() - start);
            probe.bytes.push(event.data.length);
            probe.positions.push((event.data.match(/"id":/g) || []).length);
            requestAnimationFrame(() => probe.drawnMs.push(performance.now() - start));
          }
        }
      });
    }
  };
  let previous = null;
  const frame = (now) => {
    if (previous !== null) probe.rafMs.push(now - previous);
    previous = now;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  if (PerformanceObserver.supportedEntryTypes.includes("longtask")) {
    new PerformanceObserver((list) => {
      for (const entry of list.getEntries()) probe.longTasks.push(entry.duration);
    }).observe({ type: "longtask", buffered: true });
  }
})();
"""


# Installed before the page's own scripts: each Content-Security-Policy violation is written to the
# console (where Chromium also reports it), so that Browsing collects it with its directive.
CSP_PROBE = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`Content Security Policy violation: ${event.effectiveDirective} refused ` +
    `${event.blockedURI || "inline"} (${event.sourceFile || "the page"}:${event.lineNumber})`);
});
"""


class TeamTrack(Server):
    """A daphne of our own with a migrated database, and the commands that fill it."""

    def __init__(self, tmp_path: Path, **env: str):
        super().__init__(tmp_path)
        self.workdir = tmp_path
        self.pool: list[dict] = []  # provisioned teams not yet handed to a test
        self.env.update({"MAP_TILE_URL": NO_TILES, **env})
        self.manage("migrate", "--verbosity", "0")

    def provision(self, *, teams: int, workers: int, prefix: str) -> list[dict]:
        """Create teams PREFIX-1..N with one manager each; return them with logins and tokens."""
        return provision(self, teams=teams, workers=workers, prefix=prefix)

    def add_worker(self, slug: str, name: str) -> dict:
        """Create a worker (the server may be running or not); return its id, name and token."""
        first, token = self.manage("addworker", slug, name).splitlines()[-2:]
        worker_id = int(re.search(r"\(id (\d+)\) in \S+\. Device token:$", first).group(1))
        return {"id": worker_id, "name": name, "token": token}

    def serve(self) -> None:
        """Start daphne (again, after stop(): same port, same database)."""
        self.start(sys.executable, "-m", "teamtrack.serve", "-b", "127.0.0.1", "-p", str(self.port),
                   "teamtrack.asgi:application")  # fmt: skip


class Walker(Device):
    """A device that walks east from (lat, lng) by `step` degrees a report, reconnecting."""

    def __init__(self, ws_base: str, token: str, *, lat: float, lng: float, step: float = 0.0002,
                 interval: float = 0.25):  # fmt: skip
        super().__init__(ws_base, token, lat=lat, interval=interval)
        self.lng = lng
        self.step = step

    def position(self) -> dict:
        self.seq += 1
        lng = round(self.lng + self.seq * self.step, 6)
        return {"lat": self.lat, "lng": lng, "ts": time.time(), "seq": self.seq}


class QuietDevice:
    """A device that reports once and then holds its socket open without a word."""

    def __init__(self, ws_base: str, token: str):
        self.url = f"{ws_base}/ws/worker/"
        self.token = token
        self.socket = None

    async def open(self, *, lat: float, lng: float) -> None:
        self.socket = await websockets.connect(
            self.url, additional_headers={"Authorization": f"Bearer {self.token}"}
        )
        await self.socket.send(json.dumps({"lat": lat, "lng": lng, "ts": time.time()}))

    async def close(self) -> None:
        await self.socket.close()


class Devices:
    """Device sockets on an asyncio loop of their own thread, alongside the sync browser."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="devices", daemon=True)
        self.thread.start()

    def call(self, coroutine, timeout: float = 30):
        """Run a coroutine on the devices' loop; return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def walk(self, site: Server, token: str, *, lat: float, lng: float, **options) -> Walker:
        """Start a device walking east from (lat, lng) until the test ends."""
        walker = Walker(site.ws_base, token, lat=lat, lng=lng, **options)

        async def start():
            walker.start()

        self.call(start())
        return walker

    def report_once(self, site: Server, token: str, *, lat: float, lng: float) -> QuietDevice:
        """Connect, report one position and stay connected (and quiet) until close()."""
        device = QuietDevice(site.ws_base, token)
        self.call(device.open(lat=lat, lng=lng))
        return device

    def close_device(self, device: QuietDevice) -> None:
        self.call(device.close())

    def fleet(self, site: Server, tokens: list[str], *, interval: float, stagger: float) -> None:
        """Start the demo's simulated couriers (tracking.simulator), one every `stagger` s."""
        url = f"{site.ws_base}/ws/worker/"

        async def start():
            for index, token in enumerate(tokens):
                asyncio.ensure_future(run_device(url, token, interval=interval, seed=index))
                await asyncio.sleep(stagger)

        self.call(start(), timeout=30 + stagger * len(tokens))

    def close(self) -> None:
        async def cancel_all():
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.call(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Browsing:
    """Opens pages in fresh browser contexts, logged in, with the probe; records what went wrong."""

    def __init__(self, browser):
        self.browser = browser
        self.contexts = []
        self.errors: list[str] = []  # uncaught exceptions in any page
        self.dialogs: list[str] = []  # alert(), confirm() and prompt() messages
        self.csp_violations: list[str] = []  # what the Content-Security-Policy refused

    def watch(self, context, page) -> None:
        """Record what goes wrong in a page: exceptions and policy violations (`open` does this;
        a test that makes its own context calls it before the page loads anything)."""
        context.add_init_script(script=CSP_PROBE)
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", self._console)

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.csp_violations.append(message.text)

    def open(self, site: Server, username: str | None = None, path: str = "/", *,
             viewport: dict = DESKTOP):  # fmt: skip
        """Open `path` on `site` in a new context, logged in as `username` if given."""
        context = self.browser.new_context(viewport=viewport, base_url=site.base)
        self.contexts.append(context)
        context.add_init_script(script=PROBE)
        if username:
            session = login(site.base, username, PASSWORD)["Cookie"].removeprefix("sessionid=")
            context.add_cookies([{"name": "sessionid", "value": session, "url": site.base}])
        page = context.new_page()
        self.watch(context, page)
        page.on("dialog", self._dialog)
        response = page.goto(path)
        # Without the header nothing is enforced, and no violation could show.
        assert response.headers.get("content-security-policy"), f"{path}: no policy sent"
        return page

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `apt-get install chromium` (make test does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browsing(browser):
    browsing = Browsing(browser)
    yield browsing
    browsing.close()
    assert not browsing.errors, f"the page threw: {browsing.errors}"
    assert not browsing.csp_violations, f"the policy refused: {browsing.csp_violations}"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """One daphne for the module's tests, with a pool of teams: each test takes its own."""
    site = TeamTrack(tmp_path_factory.mktemp("site"), STALE_AFTER_SECONDS=str(STALE_AFTER_SECONDS))
    site.pool = site.provision(teams=12, workers=25, prefix="team")
    site.serve()
    yield site
    site.stop()


def _take_team(site: TeamTrack) -> dict:
    if not site.pool:
        pytest.fail("the pool of teams is used up: provision more in the `site` fixture")
    return site.pool.pop(0)


@pytest.fixture
def team(site):
    """A team of 25 workers nobody else uses, with its manager (`team["managers"][0]`)."""
    return _take_team(site)


@pytest.fixture
def other_team(site):
    return _take_team(site)


@pytest.fixture
def devices():
    devices = Devices()
    yield devices
    devices.close()


@pytest.fixture
def own_site(tmp_path):
    """A daphne for one test, which may stop and start it."""
    site = TeamTrack(tmp_path)
    yield site
    site.stop()
