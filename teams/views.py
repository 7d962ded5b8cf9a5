"""Pages: the teams a user may watch, a team's live map, its workers and their phone setup, and
a user's personal API tokens.

Each team page is for the team's managers (or superusers); a worker is found only within the
team named in the URL, so a manager can never reach another team's worker by its id.
"""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from teams import phone_links, selectors, services
from teams.forms import WorkerAddForm
from teams.models import Team, Worker
from teams.qr import qr_svg


@login_required
def team_list(request):
    teams = selectors.team_list_for_user(user=request.user)
    return render(request, "teams/team_list.html", {"teams": teams})


@login_required
def team_map(request, slug):
    team = team_for_manager(request, slug)
    map_config = {
        "team": team.slug,
        "socketPath": f"/ws/teams/{team.slug}/",
        "staleAfter": settings.TEAMTRACK_STALE_AFTER,
        "tileUrl": settings.TEAMTRACK_MAP_TILE_URL,
        "tileAttribution": settings.TEAMTRACK_MAP_TILE_ATTRIBUTION,
    }
    return render(request, "teams/team_map.html", {"team": team, "map_config": map_config})


@login_required
@require_http_methods(["GET", "POST"])
def team_workers(request, slug):
    team = team_for_manager(request, slug)
    form = WorkerAddForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        # No token yet: the phone setup issues the one the worker's phone will use.
        worker, _ = services.worker_create(
            team=team, name=form.cleaned_data["name"], with_token=False
        )
        messages.success(request, f"Added {worker.name}. Next: set up their phone.")
        return redirect("team-workers", team.slug)
    workers = selectors.worker_list_for_team(team=team)
    return render(request, "teams/workers.html", {"team": team, "workers": workers, "form": form})


@login_required
@require_http_methods(["GET", "POST"])
def team_worker_delete(request, slug, worker_id):
    team = team_for_manager(request, slug)
    worker = _worker_of(team, worker_id)
    if request.method == "POST":
        services.worker_delete(worker=worker)
        messages.success(request, f"Removed {worker.name}.")
        return redirect("team-workers", team.slug)
    return render(request, "teams/worker_delete.html", {"team": team, "worker": worker})


@login_required
@require_http_methods(["GET", "POST"])
def team_worker_setup(request, slug, worker_id):
    """GET explains; POST issues a new credential and shows it, once, in its own response
    (never in a redirect, a URL, a message or the session)."""
    team = team_for_manager(request, slug)
    worker = _worker_of(team, worker_id)
    if request.method == "GET":
        return render(request, "teams/worker_setup.html", {"team": team, "worker": worker})
    setup = services.worker_setup_issue(worker=worker, actor=request.user)
    # Behind a TLS terminator the request may look like plain HTTP; PUBLIC_URL says what phones
    # must use.
    origin = settings.TEAMTRACK_PUBLIC_URL or request.build_absolute_uri("/").rstrip("/")
    links = phone_links.phone_links(origin=origin, worker=worker, setup=setup)
    context = {
        "team": team,
        "worker": worker,
        "setup": setup,
        "links": links,
        "qr": {
            "traccar": qr_svg(links.traccar_config_link, title="Traccar Client settings"),
            "owntracks": qr_svg(links.owntracks_link, title="OwnTracks configuration"),
            "browser": qr_svg(links.enrolment_link, title="Browser tracking link"),
        },
        "enrolment_days": settings.TEAMTRACK_ENROLMENT_DAYS,
        "secure": origin.startswith("https://"),
    }
    response = render(request, "teams/worker_setup_issued.html", context)
    response["Cache-Control"] = "no-store"  # no copy in the browser's cache or history
    return response


@login_required
@require_http_methods(["GET", "POST"])
def api_tokens(request):
    """GET lists the user's tokens; POST creates one and shows it, once, in its own response
    (never in a redirect, a URL, a message or the session)."""
    context = {"errors": [], "name": "", "created": None, "token": None}
    status = 200
    if request.method == "POST":
        context["name"] = request.POST.get("name", "")
        try:
            context["created"], context["token"] = services.api_token_create(
                user=request.user, name=context["name"]
            )
        except ValidationError as error:
            context["errors"] = error.messages  # the name's: the only field a user gives
            status = 400
    context["tokens"] = selectors.api_token_list_for_user(user=request.user)
    response = render(request, "teams/api_tokens.html", context, status=status)
    if context["token"] is not None:
        response["Cache-Control"] = "no-store"  # no copy in the browser's cache or history
    return response


@login_required
@require_http_methods(["POST"])
def api_token_revoke(request, token_id):
    if not services.api_token_revoke(user=request.user, token_id=token_id):
        raise Http404("No such token")  # also another user's: whose ids exist is not told
    messages.success(request, "Revoked the token: it no longer opens the API.")
    return redirect("api-tokens")


def team_for_manager(request, slug: str) -> Team:
    """The team a page is about, if the user may watch it: 404 if there is none, 403 if they
    may not (the map's rule; the history pages use it too)."""
    team = selectors.team_get_by_slug(slug=slug)
    if team is None:
        raise Http404("No such team")
    if not selectors.team_can_watch(user=request.user, team=team):
        raise PermissionDenied
    return team


def _worker_of(team: Team, worker_id: int) -> Worker:
    worker = selectors.worker_get_for_team(team=team, worker_id=worker_id)
    if worker is None:
        raise Http404("No such worker in this team")
    return worker
