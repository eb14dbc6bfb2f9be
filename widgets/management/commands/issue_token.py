from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from widgets.models import ApiToken


class Command(BaseCommand):
    help = "Issue an API token for a user and print the raw key (shown only this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label for the token, e.g. 'warehouse scanner'.")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="Days until the token expires (default: DJANGO_TOKEN_EXPIRY_DAYS; 0 = never).",
        )
        parser.add_argument("--read-only", action="store_true", help="Allow only GET/HEAD/OPTIONS.")

    def handle(self, *args, username, name, expires_days, read_only, **options):
        if expires_days is not None and expires_days < 0:
            raise CommandError("--expires-days must be 0 (never) or more.")
        try:  # the same rule as the API's token name (the model field's validators)
            name = ApiToken._meta.get_field("name").clean(name, None)
        except ValidationError as exc:
            raise CommandError(f"--name: {' '.join(exc.messages)}") from None
        try:
            user = get_user_model().objects.get(username=username)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user named {username!r}.") from None
        _, raw_key = ApiToken.objects.issue(user=user, name=name, expires_in_days=expires_days, read_only=read_only)
        self.stdout.write(raw_key)
