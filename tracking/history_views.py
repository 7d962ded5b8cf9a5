"""The history page of a team: its tracks drawn and replayed, stops marked, "where was everyone
at ten", and the exports, for the team's managers (or superusers), as the live map is.

The page is static/js/history/; its JSON endpoints answer in the most compact shape a day of a
worker at one position a second (86,400 points) fits in: arrays, coordinates to 6 decimals
(about 0.1 m), times to the millisecond. Reading is tracking.history's and tracking.exports';
here requests are checked and parsed, and a bad parameter is a 400 with a short text.
"""

import json
import math
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from teams import selectors
from teams.models import Team
from teams.views import team_for_manager
from tracking import exports, history

EXPORT_KINDS = ("gpx", "geojson", "csv")
# A drawn range is held in the browser whole: a week of a worker at one position a second is
# 604,800 points, about 20 MB of JSON. Longer ranges are for the (streamed) exports.
MAX_DRAW_DAYS = 7
MAX_STOP_MINUTES = 24 * 60
# Positions one drawn range may hold, whatever its workers: the team's whole week held at once
# would be every worker's week (a thousand workers at one position every 10 s: 60 M points).
# Above a week of one worker at one position a second (604,800), the most the page is built for.
MAX_DRAW_POINTS = 1_000_000


@login_required
@require_GET
def history_page(request, slug):
    team = team_for_manager(request, slug)
    base = reverse("team-history", args=[team.slug])
    config = {
        "team": team.slug,
        "loginPath": reverse("login"),
        "tracksUrl": f"{base}tracks.json",
        "momentUrl": f"{base}moment.json",
        "exportUrl": f"{base}export.",
        "stopMinutes": settings.TEAMTRACK_STOP_MINUTES,
        "tileUrl": settings.TEAMTRACK_MAP_TILE_URL,
        "tileAttribution": settings.TEAMTRACK_MAP_TILE_ATTRIBUTION,
    }
    workers = selectors.worker_list_for_team(team=team).order_by("name", "id")
    context = {"team": team, "workers": workers, "history_config": config}
    return render(request, "tracking/history.html", context)


@login_required
@require_GET
def history_tracks(request, slug):
    """Each worker's points over the range, and the stops along them."""
    team = team_for_manager(request, slug)
    try:
        query = _drawable(team, history.parse_query(request.GET))
        minutes = _stop_minutes(request.GET.get("stop_minutes"))
        tracks = history.tracks(team, query, max_points=MAX_DRAW_POINTS)
    except ValueError as error:
        return HttpResponseBadRequest(str(error), content_type="text/plain; charset=utf-8")
    names = dict(
        selectors.worker_list_for_team(team=team).filter(pk__in=tracks).values_list("id", "name")
    )
    radius = settings.TEAMTRACK_STOP_RADIUS_METRES
    body = {
        "workers": {worker_id: names.get(worker_id, "") for worker_id in tracks},
        "tracks": {
            worker_id: [[round(ts, 3), round(lat, 6), round(lng, 6)] for ts, lat, lng in points]
            for worker_id, points in tracks.items()
        },
        "stops": {
            worker_id: [
                {
                    "since": round(stop.since, 3),
                    "until": round(stop.until, 3),
                    "lat": round(stop.lat, 6),
                    "lng": round(stop.lng, 6),
                }
                for stop in history.stops(points, minutes=minutes, radius_m=radius)
            ]
            for worker_id, points in tracks.items()
        },
    }
    return _json(body)


@login_required
@require_GET
def history_moment(request, slug):
    """Each worker's last position at or before `at`."""
    team = team_for_manager(request, slug)
    try:
        at = _parse_time(request.GET.get("at"), "at")
    except ValueError as error:
        return HttpResponseBadRequest(str(error), content_type="text/plain; charset=utf-8")
    positions = history.moment(team, at)
    for position in positions:
        position.update(ts=round(position["ts"], 3), lat=round(position["lat"], 6),
                        lng=round(position["lng"], 6))  # fmt: skip
    return _json({"positions": positions})


@login_required
@require_GET
def history_export(request, slug, kind):
    """The team's (or a worker's) positions over the range, as a GPX, GeoJSON or CSV download."""
    team = team_for_manager(request, slug)
    if kind not in EXPORT_KINDS:
        raise Http404("No such export")
    try:
        query = _of_team(team, history.parse_query(request.GET))
    except ValueError as error:
        return HttpResponseBadRequest(str(error), content_type="text/plain; charset=utf-8")
    return exports.export_response(kind, team, query)


# ---------------------------------------------------------------- parameters


def _of_team(team: Team, query: history.Query) -> history.Query:
    """The query, if its worker (when it names one) is the team's."""
    if query.worker_id is not None and not selectors.worker_get_for_team(
        team=team, worker_id=query.worker_id
    ):
        # Whether the id is another team's worker or nobody's is not told.
        raise ValueError("worker: no such worker in this team")
    return query


def _drawable(team: Team, query: history.Query) -> history.Query:
    """The query, if it is one the page can draw: a bounded range of at most MAX_DRAW_DAYS."""
    query = _of_team(team, query)
    if query.since is None or query.until is None:
        raise ValueError("since and until are both required")
    if query.until - query.since > MAX_DRAW_DAYS * 86400:
        raise ValueError(f"at most {MAX_DRAW_DAYS} days at a time (export longer ranges)")
    return query


def _stop_minutes(value: str | None) -> float:
    if value is None or value == "":
        return settings.TEAMTRACK_STOP_MINUTES
    try:
        minutes = float(value)
    except ValueError:
        raise ValueError("stop_minutes: not a number") from None
    if not math.isfinite(minutes) or not 0 < minutes <= MAX_STOP_MINUTES:
        raise ValueError(f"stop_minutes: from above 0 to {MAX_STOP_MINUTES}")
    return minutes


def _parse_time(value: str | None, name: str) -> float:
    """An ISO 8601 time (without an offset, UTC, as tracking.history.parse_query reads them) as
    Unix seconds."""
    if not value:
        raise ValueError(f"{name}: required")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name}: not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _json(body: dict) -> HttpResponse:
    # Compact: no spaces; allow_nan=False, since the browser's JSON.parse would refuse NaN.
    text = json.dumps(body, separators=(",", ":"), allow_nan=False)
    return HttpResponse(text, content_type="application/json")
