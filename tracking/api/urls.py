"""Routes of the history API, included under /api/v1/ (teamtrack/urls.py).

A team's slug is matched as any path segment (`str`), not Django's `slug`: one that could not
be a slug then reaches the view and gets the API's JSON 404, not the site's HTML page."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView

from tracking.api import views

urlpatterns = [
    path("teams/", views.TeamList.as_view(), name="api-teams"),
    path("teams/<str:slug>/", views.TeamDetail.as_view(), name="api-team"),
    path("teams/<str:slug>/workers/", views.WorkerList.as_view(), name="api-workers"),
    path("teams/<str:slug>/positions/", views.PositionList.as_view(), name="api-positions"),
    path("teams/<str:slug>/export.gpx", views.ExportGpx.as_view(), name="api-export-gpx"),
    path(
        "teams/<str:slug>/export.geojson",
        views.ExportGeoJson.as_view(),
        name="api-export-geojson",
    ),
    path("teams/<str:slug>/export.csv", views.ExportCsv.as_view(), name="api-export-csv"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", views.api_docs, name="api-docs"),
]
