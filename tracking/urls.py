"""HTTP routes of devices: the phone apps' protocols and the browser tracking page."""

from django.urls import path

urlpatterns: list = []
