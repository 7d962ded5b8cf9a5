"""HTTP routes of the browser tracking page."""

from django.urls import path

from tracking import track_views

# The phone apps' endpoints (/osmand/, /owntracks/) are consumers: tracking/routing.py.
urlpatterns = [
    # The browser tracking page (tracking/track_views.py).
    path("track/", track_views.track_page, name="track-page"),
    path("track/enrol", track_views.track_enrol, name="track-enrol"),
    path("track/manifest.webmanifest", track_views.track_manifest, name="track-manifest"),
    path("track/icon.svg", track_views.track_icon, name="track-icon"),
    path("track/sw.js", track_views.track_service_worker, name="track-sw"),
]
