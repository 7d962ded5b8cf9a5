"""HTTP routes of the browser tracking page and of a team's history page."""

from django.urls import path

from tracking import history_views, track_views

# The phone apps' endpoints (/osmand/, /owntracks/) are consumers: tracking/routing.py.
urlpatterns = [
    # The browser tracking page (tracking/track_views.py).
    path("track/", track_views.track_page, name="track-page"),
    path("track/enrol", track_views.track_enrol, name="track-enrol"),
    path("track/manifest.webmanifest", track_views.track_manifest, name="track-manifest"),
    path("track/icon.svg", track_views.track_icon, name="track-icon"),
    path("track/sw.js", track_views.track_service_worker, name="track-sw"),
    # A team's history page and what it reads (tracking/history_views.py).
    path("teams/<slug:slug>/history/", history_views.history_page, name="team-history"),
    path("teams/<slug:slug>/history/tracks.json", history_views.history_tracks),
    path("teams/<slug:slug>/history/moment.json", history_views.history_moment),
    path("teams/<slug:slug>/history/export.<str:kind>", history_views.history_export),
]
