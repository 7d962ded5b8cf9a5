"""The browser tracking page for workers who install nothing: the page, its enrolment endpoint,
its web app manifest, icon and service worker (docs: the page's section of docs/protocol.md).

The enrolment code is the credential: /track/enrol takes no cookie and is exempt from CSRF, and
neither the code nor the token it returns is ever logged.
"""

import hashlib
import json
import logging
from functools import cache

from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.staticfiles import finders
from django.db import OperationalError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.template.loader import get_template, render_to_string
from django.templatetags.static import static
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe

from teams import services
from tracking import limits

logger = logging.getLogger(__name__)

MAX_CODE_CHARS = 256
# The page's static files, which the service worker caches: the stylesheet and every module
# page.js imports, directly or not (tests/js/track-shell.test.js keeps this list complete).
SHELL_STATIC = (
    "css/track.css",
    "js/socket.js",
    "js/util.js",
    "js/track/config.js",
    "js/track/enrol.js",
    "js/track/page.js",
    "js/track/queue.js",
    "js/track/store.js",
    "js/track/tracker.js",
    "js/track/wakelock.js",
)


def _text(status: int, text: str) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


@require_safe
def track_page(request):
    """Serve the page; it reads an enrolment code from its own fragment."""
    track_config = {
        "socketPath": "/ws/worker/",
        "enrolPath": reverse("track-enrol"),
        "serviceWorker": reverse("track-sw"),
        "scope": reverse("track-page"),
    }
    response = render(request, "tracking/track.html", {"track_config": track_config})
    response["Cache-Control"] = "no-cache"
    return response


@csrf_exempt
@never_cache
@require_POST
def track_enrol(request):
    """Exchange a one-time enrolment code for the worker's device token."""
    address = request.META.get("REMOTE_ADDR", "")
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return _text(400, "The body must be JSON.")
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, str) or not code or len(code) > MAX_CODE_CHARS:
        return _text(400, 'The body must be {"code": "<enrolment code>"}.')
    try:
        redeemed = services.enrolment_redeem(code=code)
    except OperationalError:  # SQLite (development) refuses a second writer at once
        return _text(503, "Busy; try again.")
    if redeemed is None:
        if async_to_sync(limits.get_limits().login_failed)(address):
            return _text(429, "Too many failed attempts from this address; try again in a minute.")
        return _text(410, "This enrolment link is unknown, used or expired.")
    worker, token = redeemed
    logger.info("Worker %s of team %s enrolled a browser", worker.pk, worker.team_id)
    return JsonResponse(
        {
            "token": token,
            "worker": {"id": worker.pk, "name": worker.name},
            "team": {"slug": worker.team.slug, "name": worker.team.name},
        }
    )


@require_safe
def track_manifest(request):
    """Serve the web app manifest that makes the page installable."""
    icon = reverse("track-icon")
    manifest = {
        "name": "TeamTrack",
        "short_name": "TeamTrack",
        "description": "Share your location with your team while you work.",
        "id": reverse("track-page"),
        "start_url": reverse("track-page"),
        "scope": reverse("track-page"),
        "display": "standalone",
        "orientation": "portrait",
        "background_color": "#f6f8fa",
        "theme_color": "#0b1f33",
        "icons": [
            {"src": icon, "sizes": "any", "type": "image/svg+xml", "purpose": "any"},
            {"src": icon, "sizes": "any", "type": "image/svg+xml", "purpose": "maskable"},
        ],
    }
    return JsonResponse(manifest, content_type="application/manifest+json")


@require_safe
def track_icon(request):
    """Serve the app's icon (one SVG, drawn to be safe as a maskable icon too)."""
    response = HttpResponse(
        render_to_string("tracking/icon.svg"), content_type="image/svg+xml; charset=utf-8"
    )
    response["Cache-Control"] = "max-age=86400"
    return response


@require_safe
def track_service_worker(request):
    """Serve the service worker from under /track/, so that its scope covers the page."""
    page = reverse("track-page")
    shell = [
        page,
        reverse("track-manifest"),
        reverse("track-icon"),
        *_shell_static_urls(),
    ]
    context = {
        "cache_name_json": json.dumps(f"teamtrack-track-{_shell_version()}"),
        "shell_json": json.dumps(shell),
        "page_json": json.dumps(page),
        "never_json": json.dumps([reverse("track-enrol"), reverse("track-sw")]),
    }
    response = HttpResponse(
        render_to_string("tracking/sw.js", context), content_type="text/javascript; charset=utf-8"
    )
    response["Service-Worker-Allowed"] = page
    response["Cache-Control"] = "no-cache"
    return response


def _shell_static_urls() -> list[str]:
    """The static files' URLs as the page asks for them: the hashed name that {% static %} gives
    the page's own tags (in production), and the plain name that a module's relative import
    asks for (imports are not rewritten by the manifest storage)."""
    urls = []
    for path in SHELL_STATIC:
        for url in (static(path), f"{settings.STATIC_URL}{path}"):
            if url not in urls:
                urls.append(url)
    return urls


@cache
def _shell_version() -> str:
    """A digest of the page's files, so that a deployment that changes them renames the cache
    (and, through the script's text, updates the service worker)."""
    digest = hashlib.sha256()
    for name in ("tracking/track.html", "tracking/sw.js", "tracking/icon.svg"):
        digest.update(get_template(name).template.source.encode())
    for path in SHELL_STATIC:
        found = finders.find(path)
        digest.update(path.encode())
        if found:
            with open(found, "rb") as file:
                digest.update(file.read())
    return digest.hexdigest()[:16]
