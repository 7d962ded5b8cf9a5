"""HTTP routes of devices: the phone apps' protocols and the browser tracking page."""

from django.urls import path, re_path

from tracking import phone_views, track_views

urlpatterns = [
    # With or without the slash: the apps' users type the server URL, and Django's redirect to
    # the slash would lose a POST.
    re_path(r"^osmand/?$", phone_views.osmand_upload, name="osmand"),
    re_path(r"^owntracks/?$", phone_views.owntracks_upload, name="owntracks"),
    # The browser tracking page (tracking/track_views.py).
    path("track/", track_views.track_page, name="track-page"),
    path("track/enrol", track_views.track_enrol, name="track-enrol"),
    path("track/manifest.webmanifest", track_views.track_manifest, name="track-manifest"),
    path("track/icon.svg", track_views.track_icon, name="track-icon"),
    path("track/sw.js", track_views.track_service_worker, name="track-sw"),
]
