"""Token authentication against our hashed, expiring, revocable ``ApiToken``.

A verified token is remembered in this process for ``API_TOKEN_CACHE_SECONDS``
(default 5), together with its user and that user's permissions, so a busy client
costs no authentication queries between look-ups. The price, documented in
docs/configuration.md: revoking a token, deactivating a user or changing a user's roles takes
effect within that many seconds rather than at once. 0 turns the cache off.
"""
import re
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions

from ..models import ApiToken, token_digest

KEY_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,200}")

# last_used_at is bookkeeping, not an audit trail: write it at most this often.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A bound on the memory the cache may take; past it the cache starts afresh.
CACHE_MAX_ENTRIES = 10_000

_verified: dict[str, tuple[float, ApiToken]] = {}


def _copy(instance):
    """What ``copy.copy`` makes of a model instance (Django's ``__getstate__``: the fields,
    a fresh ``_state`` and related-object cache), without the pickle protocol's detour."""
    clone = instance.__class__.__new__(instance.__class__)
    clone.__dict__.update(instance.__getstate__())
    return clone


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
        digest = token_digest(raw_key)
        cached = _verified.get(digest)
        if cached is not None and cached[0] > time.monotonic():
            token = cached[1]
        else:
            token = self._look_up(raw_key, digest)
        if token.is_expired:  # a cached token may have expired since it was looked up
            raise exceptions.AuthenticationFailed("Token has expired.")

        now = timezone.now()
        if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
            token.last_used_at = now
        # Copies: a request may annotate its user; the cached objects stay as loaded.
        request_token = _copy(token)
        request_token.user = _copy(token.user)
        return request_token.user, request_token

    def _look_up(self, raw_key: str, digest: str) -> ApiToken:
        candidates = ApiToken.objects.select_related("user").filter(prefix=raw_key[: ApiToken.PREFIX_LENGTH])
        token = next((t for t in candidates if t.matches(raw_key)), None)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if token.revoked_at is not None:
            raise exceptions.AuthenticationFailed("Token has been revoked.")
        if token.is_expired:
            raise exceptions.AuthenticationFailed("Token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        ttl = settings.API_TOKEN_CACHE_SECONDS
        if ttl > 0:
            # Loads the permissions onto the user object now, so the copies handed to
            # later requests carry them and never query for them.
            token.user.get_all_permissions()
            if len(_verified) >= CACHE_MAX_ENTRIES:
                _verified.clear()
            _verified[digest] = (time.monotonic() + ttl, token)
        return token

    def authenticate_header(self, request):
        return 'Token realm="api"'
