"""teamtrack.serve, the command every replica runs: daphne, with its event loop on uvloop and the
garbage collector set for thousands of sockets."""

import subprocess
import sys

from django.conf import settings

# Runs the module as `python -m teamtrack.serve --help` does (argparse prints and exits), then
# starts and stops the reactor it set up, and reports the loop daphne made and the collector.
PROBE = """
import gc, runpy, sys
sys.argv = ["teamtrack.serve", "--help"]
try:
    runpy.run_module("teamtrack.serve", run_name="__main__")
except SystemExit:
    pass
from twisted.internet import reactor
assert gc.get_freeze_count() == 0, "frozen before the server loaded the application"
reactor.callWhenRunning(reactor.stop)
reactor.run(installSignalHandlers=False)
print(type(sys.modules["daphne.server"].twisted_loop).__module__)
print(gc.get_threshold()[0], gc.get_freeze_count() > 1000)
"""


def test_a_replica_runs_daphne_on_uvloop_with_its_startup_frozen_out_of_collections():
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--websocket_timeout" in result.stdout  # daphne's usage
    loop, collector = result.stdout.strip().splitlines()[-2:]
    assert loop == "uvloop"
    assert collector == "10000 True"
