import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Local development only: create the 'admin' superuser once, with a printed password. "
        "Later runs leave it alone (its sessions and a password you chose survive); "
        "--reset-password (`make admin-password`) prints a new one."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument(
            "--reset-password", action="store_true", help="Give the existing admin a new random password."
        )

    def handle(self, *args, username, reset_password, **options):
        if not settings.DEBUG:
            raise CommandError("ensure_local_admin is for local development (DJANGO_DEBUG=1) only.")
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if not (created or reset_password):
            self.stdout.write(
                f"Local admin: username {username} (exists; its password is unchanged). "
                "Forgot it? `make admin-password` prints a new one."
            )
            return
        password = secrets.token_urlsafe(12)
        user.is_staff = user.is_superuser = user.is_active = True
        user.set_password(password)
        user.save()
        self.stdout.write(f"Local admin login:  username {username}  password {password}")
