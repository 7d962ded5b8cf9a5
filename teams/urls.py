"""Pages of teams: the list, a team's live map, its workers and their phone setup."""

from django.urls import path

from teams import views

urlpatterns = [
    path("", views.team_list, name="team-list"),
    path("teams/<slug:slug>/", views.team_map, name="team-map"),
]
