"""Pages: the list of teams a user may watch, and a team's live map."""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import render

from teams import selectors


@login_required
def team_list(request):
    teams = selectors.team_list_for_user(user=request.user)
    return render(request, "teams/team_list.html", {"teams": teams})


@login_required
def team_map(request, slug):
    team = selectors.team_get_by_slug(slug=slug)
    if team is None:
        raise Http404("No such team")
    if not selectors.team_can_watch(user=request.user, team=team):
        raise PermissionDenied
    map_config = {
        "team": team.slug,
        "socketPath": f"/ws/teams/{team.slug}/",
        "staleAfter": settings.TEAMTRACK_STALE_AFTER,
        "tileUrl": settings.TEAMTRACK_MAP_TILE_URL,
        "tileAttribution": settings.TEAMTRACK_MAP_TILE_ATTRIBUTION,
    }
    return render(request, "teams/team_map.html", {"team": team, "map_config": map_config})
