"""teamtrack.serve, the command every replica runs: daphne, with its event loop on uvloop."""

import subprocess
import sys

from django.conf import settings

# Runs the module as `python -m teamtrack.serve --help` does (argparse prints and exits), then
# names the loop daphne made on import.
PROBE = """
import atexit, runpy, sys
atexit.register(lambda: print(type(sys.modules["daphne.server"].twisted_loop).__module__))
sys.argv = ["teamtrack.serve", "--help"]
runpy.run_module("teamtrack.serve", run_name="__main__")
"""


def test_a_replica_runs_daphne_on_uvloop():
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--websocket_timeout" in result.stdout  # daphne's
    assert result.stdout.strip().splitlines()[-1] == "uvloop"
