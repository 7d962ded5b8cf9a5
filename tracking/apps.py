from django.apps import AppConfig
from django.contrib.auth.signals import user_logged_out


def close_sockets_on_logout(sender, request, user, **kwargs):
    """Logging out ends the user's live maps too, on every replica."""
    from tracking.relay import close_user_sockets

    if user is not None:
        close_user_sockets(user.pk)


class TrackingConfig(AppConfig):
    name = "tracking"
    verbose_name = "Live tracking"

    def ready(self):
        user_logged_out.connect(close_sockets_on_logout, dispatch_uid="tracking.close_on_logout")
