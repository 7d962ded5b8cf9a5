"""Pages of teams: the list, a team's live map, its workers and their phone setup; a user's
personal API tokens."""

from django.urls import path

from teams import views

urlpatterns = [
    path("", views.team_list, name="team-list"),
    path("teams/<slug:slug>/", views.team_map, name="team-map"),
    path("teams/<slug:slug>/workers/", views.team_workers, name="team-workers"),
    path(
        "teams/<slug:slug>/workers/<int:worker_id>/remove/",
        views.team_worker_delete,
        name="team-worker-delete",
    ),
    path(
        "teams/<slug:slug>/workers/<int:worker_id>/setup/",
        views.team_worker_setup,
        name="team-worker-setup",
    ),
    path("account/api-tokens/", views.api_tokens, name="api-tokens"),
    path(
        "account/api-tokens/<int:token_id>/revoke/",
        views.api_token_revoke,
        name="api-token-revoke",
    ),
]
