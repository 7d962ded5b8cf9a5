from django.contrib import admin
from django.urls import include, path

from teams import views
from tracking import health, metrics

urlpatterns = [
    path("", views.team_list, name="team-list"),
    path("teams/<slug:slug>/", views.team_map, name="team-map"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
]
