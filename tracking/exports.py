"""Exports of stored positions as GPX (one track per worker), GeoJSON (a LineString feature per
worker) and CSV (a header line, then a row per position), streamed: a month of a team is never
held in memory. The history page and the API both answer with `export_response`."""

from typing import Literal

from django.http import StreamingHttpResponse

from teams.models import Team
from tracking.history import Query

Kind = Literal["gpx", "geojson", "csv"]


def export_response(kind: Kind, team: Team, query: Query) -> StreamingHttpResponse:
    """A streamed download of the team's positions matching `query`, named after the team and
    the range (Content-Disposition: attachment)."""
    raise NotImplementedError
