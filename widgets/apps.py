from django.apps import AppConfig


class WidgetsConfig(AppConfig):
    name = "widgets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from . import credentials
        from .api import schema  # noqa: F401  (registers the OpenAPI extensions)

        # Users, groups and permissions are edited by Django's own auth admin: its model
        # signals are the one place to hear that a credential changed (widgets/credentials.py).
        credentials.connect_signals()
