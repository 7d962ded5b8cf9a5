"""The API's endpoints: authenticate (DRF, by token or session), find the team among the ones
the caller may see, validate the filters, and hand the reading to tracking.history and
tracking.exports. A team the caller may not see is answered 404, as one that does not exist.
"""

from django.shortcuts import render
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import generics
from rest_framework.exceptions import NotFound, ParseError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.views import APIView

from teams import selectors
from teams.models import Team
from tracking import exports, history
from tracking.api import docs
from tracking.api.pagination import PositionCursorPagination
from tracking.api.serializers import (
    ErrorSerializer,
    PositionSerializer,
    TeamSerializer,
    WorkerSerializer,
)

UNAUTHENTICATED = OpenApiResponse(ErrorSerializer, description="No credentials, or a bad token.")
NOT_FOUND = OpenApiResponse(
    ErrorSerializer, description="No such team, or one you may not see (the same answer)."
)
BAD_FILTER = OpenApiResponse(ErrorSerializer, description="A filter (or cursor) is malformed.")
MAX_ID = 2**63 - 1  # the largest id a database column holds
SLUG = OpenApiParameter(
    "slug", OpenApiTypes.STR, OpenApiParameter.PATH, pattern=r"^[-a-zA-Z0-9_]+$"
)
FILTERS = [
    OpenApiParameter(
        "worker",
        {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        description="Only this worker's positions (its id); all the team's if absent.",
    ),
    OpenApiParameter(
        "since",
        OpenApiTypes.DATETIME,
        description="From this time on (inclusive), ISO 8601; UTC if it has no offset.",
    ),
    OpenApiParameter(
        "until",
        OpenApiTypes.DATETIME,
        description="Up to this time (exclusive), ISO 8601; UTC if it has no offset.",
    ),
]


def team_or_404(request, slug: str) -> Team:
    team = selectors.team_get_for_user(user=request.user, slug=slug)
    if team is None:
        raise NotFound("No such team.")
    return team


def query_or_400(request) -> history.Query:
    try:
        query = history.parse_query(request.query_params)
    except ValueError as error:
        raise ParseError(str(error)) from None
    if query.worker_id is not None and query.worker_id > MAX_ID:
        # No worker has it, and the database would refuse the number (a 500, not a 400).
        raise ParseError("worker must be a worker's id (a whole number)")
    return query


@extend_schema_view(
    get=extend_schema(
        operation_id="teams_list",
        summary="The teams you may see",
        responses={
            200: OpenApiResponse(TeamSerializer(many=True), description="Every team you may see."),
            401: UNAUTHENTICATED,
        },
    )
)
class TeamList(generics.ListAPIView):
    """The teams you manage (every team, for a superuser)."""

    serializer_class = TeamSerializer

    def get_queryset(self):
        return selectors.team_list_for_user(user=self.request.user)


@extend_schema_view(
    get=extend_schema(
        operation_id="teams_retrieve",
        summary="One team",
        parameters=[SLUG],
        responses={
            200: OpenApiResponse(TeamSerializer, description="The team."),
            401: UNAUTHENTICATED,
            404: NOT_FOUND,
        },
    )
)
class TeamDetail(generics.RetrieveAPIView):
    serializer_class = TeamSerializer

    def get_object(self):
        return team_or_404(self.request, self.kwargs["slug"])


@extend_schema_view(
    get=extend_schema(
        operation_id="teams_workers_list",
        summary="A team's workers",
        parameters=[SLUG],
        responses={
            200: OpenApiResponse(WorkerSerializer(many=True), description="All its workers."),
            401: UNAUTHENTICATED,
            404: NOT_FOUND,
        },
    )
)
class WorkerList(generics.ListAPIView):
    """All the team's workers, active or not (an inactive one may have a history)."""

    serializer_class = WorkerSerializer

    def get_queryset(self):
        return selectors.worker_list_for_team(team=team_or_404(self.request, self.kwargs["slug"]))


@extend_schema_view(
    get=extend_schema(
        operation_id="teams_positions_list",
        summary="A team's stored positions",
        parameters=[SLUG, *FILTERS],
        responses={
            200: OpenApiResponse(PositionSerializer(many=True), description="A page of positions."),
            400: BAD_FILTER,
            401: UNAUTHENTICATED,
            404: NOT_FOUND,
        },
    )
)
class PositionList(generics.ListAPIView):
    """The team's positions in time order (ts, then id), a page at a time: follow `next` until
    it is null."""

    serializer_class = PositionSerializer
    pagination_class = PositionCursorPagination

    def list(self, request, *args, **kwargs):
        team = team_or_404(request, kwargs["slug"])
        rows = history.positions(team, query_or_400(request))
        page = self.paginator.paginate_queryset(rows, request, view=self)
        return self.paginator.get_paginated_response(page)


class FirstRenderer(BaseContentNegotiation):
    """An export is a file whatever the client's Accept says (curl, browsers and HTTP libraries
    send all sorts); DRF's negotiation would answer 406 to one not naming JSON. Errors are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return None


class Export(APIView):
    kind: exports.Kind
    content_negotiation_class = FirstRenderer

    def get(self, request, slug):
        team = team_or_404(request, slug)
        return exports.export_response(self.kind, team, query_or_400(request))


# The GeoJSON export's shape (RFC 7946), as tracking/exports.py writes it: a worker with a single
# position has a Point, not a LineString of one.
GEOJSON = {
    "type": "object",
    "required": ["type", "features"],
    "properties": {
        "type": {"type": "string", "enum": ["FeatureCollection"]},
        "features": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "geometry", "properties"],
                "properties": {
                    "type": {"type": "string", "enum": ["Feature"]},
                    "geometry": {
                        "type": "object",
                        "required": ["type", "coordinates"],
                        "properties": {
                            "type": {"type": "string", "enum": ["LineString", "Point"]},
                            "coordinates": {"type": "array", "items": {}},
                        },
                    },
                    "properties": {
                        "type": "object",
                        "required": ["id", "name", "times"],
                        "properties": {
                            "id": {"type": "integer", "description": "The worker's id."},
                            "name": {"type": "string", "description": "The worker's name."},
                            "times": {
                                "type": "array",
                                "items": {"type": "string", "format": "date-time"},
                                "description": "Each coordinate's time, UTC.",
                            },
                        },
                    },
                },
            },
        },
    },
}


def _export_schema(kind: str, media_type: str, shape: str, body=OpenApiTypes.STR):
    return extend_schema_view(
        get=extend_schema(
            operation_id=f"teams_export_{kind.lower()}",
            summary=f"Export as {kind}",
            description=f"{shape} Streamed, as an attachment; the same filters as the positions.",
            parameters=[SLUG, *FILTERS],
            responses={
                (200, media_type): OpenApiResponse(body, description=f"The {kind} file."),
                (400, "application/json"): BAD_FILTER,
                (401, "application/json"): UNAUTHENTICATED,
                (404, "application/json"): NOT_FOUND,
            },
        )
    )


@_export_schema("GPX", "application/gpx+xml", "One track per worker.")
class ExportGpx(Export):
    kind = "gpx"


@_export_schema("GeoJSON", "application/geo+json", "A LineString feature per worker.", GEOJSON)
class ExportGeoJson(Export):
    kind = "geojson"


@_export_schema("CSV", "text/csv", "A header line, then a row per position.")
class ExportCsv(Export):
    kind = "csv"


def api_docs(request):
    """The API's reference, rendered on the server from its own schema: the usual viewers
    (Redoc, Swagger UI) run scripts from a CDN, which the site's Content-Security-Policy
    forbids, and this page needs none."""
    return render(request, "tracking/api_docs.html", docs.reference(request))
