"""Static files collected as production serves them, for the processes deploy/ and the tests
start with DEBUG off: WhiteNoise's compressed manifest storage then serves only what
collectstatic wrote, and a page naming a file it lacks fails.

A collection takes seconds (every file compressed twice), so it is kept in the temporary folder
under a digest of what goes into it (our static files, the settings that find them, and the
packages that bring the others), and made again only when that changes.
"""

import hashlib
import os
import secrets
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from deploy.processes import ROOT, manage

# The packages whose static files are collected (the admin's, Leaflet) or that write them.
PACKAGES = ("django", "xstatic-leaflet", "whitenoise", "django-csp")


def sources_digest() -> str:
    """A digest of everything a collection depends on."""
    digest = hashlib.sha256()
    for package in PACKAGES:
        digest.update(f"{package}=={version(package)}\n".encode())
    files = [ROOT / "teamtrack" / "settings.py", *sorted((ROOT / "static").rglob("*"))]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def static_root() -> Path:
    """The folder of the collection of the current sources (it may not be collected yet)."""
    return Path(tempfile.gettempdir()) / f"teamtrack-static-{sources_digest()}"


def collect_static(root: Path) -> Path:
    """Collect into `root` unless a collection is there already; return `root`.

    Collected beside it and renamed into place, so that a process never serves a half-written
    folder and two processes collecting at once both end with a whole one.
    """
    if (root / "staticfiles.json").exists():
        return root
    partial = Path(tempfile.mkdtemp(prefix=f"{root.name}-", dir=root.parent))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "teamtrack.settings",
        "DEBUG": "false",  # the production storage, which writes the manifest
        "SECRET_KEY": secrets.token_urlsafe(50),  # read by nothing here, but required
        "STATIC_ROOT": str(partial),
    }
    try:
        manage(env, "collectstatic", "--noinput", "--verbosity", "0", timeout=300)
    except RuntimeError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        partial.rename(root)
    except OSError:  # another process put its collection there first: the same files
        shutil.rmtree(partial, ignore_errors=True)
    return root
