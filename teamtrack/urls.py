from django.contrib import admin
from django.urls import include, path

from tracking import health, metrics

urlpatterns = [
    path("", include("teams.urls")),
    path("", include("tracking.urls")),
    path("api/v1/", include("tracking.api.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics, name="metrics"),
]
