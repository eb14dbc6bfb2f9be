"""Token authentication against our hashed, expiring, revocable ``ApiToken``."""
import re
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions

from ..models import ApiToken

KEY_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,200}")

# last_used_at is bookkeeping, not an audit trail: write it at most this often.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class TokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <key>`` (or ``Bearer <key>``)."""

    keywords = ("token", "bearer")

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].decode("latin-1").lower() not in self.keywords:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid token header: expected 'Token <key>'.")
        raw_key = header[1].decode("latin-1")
        # Keys are URL-safe base64: anything else (NUL, which PostgreSQL cannot even compare,
        # or a 100 kB header) is refused before it reaches the database.
        if not KEY_FORMAT.fullmatch(raw_key):
            raise exceptions.AuthenticationFailed("Invalid token.")
        return self.authenticate_key(raw_key)

    def authenticate_key(self, raw_key: str):
        prefix = raw_key[: ApiToken.PREFIX_LENGTH]
        candidates = ApiToken.objects.select_related("user").filter(prefix=prefix)
        token = next((t for t in candidates if t.matches(raw_key)), None)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Token has been revoked.")
        if token.is_expired:
            raise exceptions.AuthenticationFailed("Token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")

        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request):
        return 'Token realm="api"'
