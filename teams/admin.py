"""Admin for teams, their managers and workers, with actions to issue, rotate and revoke tokens.

A new token is shown once, on a page rendered straight from the request that issued it; it never
passes through messages, sessions or cookies, so nothing but its hash is ever stored. A worker's
"Set up a phone" link leads to the team's phone setup page (teams/views.py), which issues the
token with the apps' settings and QR codes.
"""

from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from teams import services
from teams.models import Team, Worker


class WorkerInline(admin.TabularInline):
    model = Worker
    fields = ["name", "active", "has_token"]
    readonly_fields = ["name", "active", "has_token"]
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        # Workers are added on their own page, which shows the new token.
        return False

    @admin.display(boolean=True, description="token")
    def has_token(self, worker):
        return worker.has_token


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "worker_count", "teammates_in_apps"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["managers"]
    inlines = [WorkerInline]

    @admin.display(description="workers")
    def worker_count(self, team):
        return team.workers.count()


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "active", "has_token", "token_issued_at", "phone_setup"]
    list_filter = ["team", "active"]
    search_fields = ["name"]
    readonly_fields = ["token_issued_at"]
    fields = ["team", "name", "active", "token_issued_at"]
    actions = ["rotate_tokens", "revoke_tokens"]

    @admin.display(boolean=True, description="token")
    def has_token(self, worker):
        return worker.has_token

    @admin.display(description="phone")
    def phone_setup(self, worker):
        # The change page links it too (templates/admin/teams/worker/change_form.html).
        url = reverse("team-worker-setup", args=[worker.team.slug, worker.pk])
        return format_html('<a href="{}">Set up a phone</a>', url)

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("team")  # the link needs the slug

    def save_model(self, request, obj, form, change):
        if change:
            services.worker_update(worker=obj, name=obj.name, active=obj.active, team=obj.team)
            return
        worker, token = services.worker_create(team=obj.team, name=obj.name, actor=request.user)
        obj.pk = worker.pk
        if not obj.active:
            services.worker_update(worker=worker, name=worker.name, active=False, team=worker.team)
        request.issued_tokens = [(worker, token)]

    def response_add(self, request, obj, post_url_continue=None):
        return self._tokens_page(request, request.issued_tokens)

    def delete_model(self, request, obj):
        services.worker_delete(worker=obj)

    def delete_queryset(self, request, queryset):
        for worker in queryset:
            services.worker_delete(worker=worker)

    # Both change a worker (and the first shows its new token): staff who may only view workers
    # get neither.
    @admin.action(
        permissions=["change"], description="Issue a new token (the old one stops working)"
    )
    def rotate_tokens(self, request, queryset):
        issued = [
            (worker, services.worker_token_rotate(worker=worker, actor=request.user))
            for worker in queryset
        ]
        return self._tokens_page(request, issued)

    @admin.action(permissions=["change"], description="Revoke the token (open sockets are closed)")
    def revoke_tokens(self, request, queryset):
        for worker in queryset:
            services.worker_token_revoke(worker=worker, actor=request.user)
        self.message_user(request, f"Revoked the tokens of {queryset.count()} worker(s).")

    def _tokens_page(self, request, issued):
        context = {
            **self.admin_site.each_context(request),
            "title": "New device tokens",
            "opts": self.model._meta,
            "issued": issued,
        }
        response = TemplateResponse(request, "admin/teams/worker/tokens_issued.html", context)
        response["Cache-Control"] = "no-store"
        return response
