"""HTTP routes of devices: the phone apps' protocols and the browser tracking page."""

from django.urls import re_path

from tracking import phone_views

urlpatterns = [
    # With or without the slash: the apps' users type the server URL, and Django's redirect to
    # the slash would lose a POST.
    re_path(r"^osmand/?$", phone_views.osmand_upload, name="osmand"),
    re_path(r"^owntracks/?$", phone_views.owntracks_upload, name="owntracks"),
]
