"""Token authentication against our hashed, expiring, revocable ``ApiToken``.

A verified token is remembered in this process for ``API_TOKEN_CACHE_SECONDS``
(default 5), together with its user and that user's permissions, so a busy client
costs no authentication queries between look-ups. It is remembered with the credentials
generation it was verified under (``widgets.credentials``) and used only while that is
still the current one, so revoking a token, deactivating a user or changing anyone's
roles takes effect on the very next request, on every process and instance. Without Redis
nothing is remembered across requests. 0 turns the cache off.

Reading the generation costs no round trip of its own: for a remembered token it is read in
the Redis call that counts the request for the per-user throttle (which would come next, and
then uses that count: ``throttling.CountingRateThrottle``). A request the user throttle does
not count (a view without it) reads the generation alone.
"""

import re
import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from rest_framework import authentication, exceptions

from .. import credentials
from ..models import ApiToken, token_digest
from .throttling import UserRateThrottle

KEY_FORMAT = re.compile(r"[A-Za-z0-9_-]{1,200}")

# last_used_at is bookkeeping, not an audit trail: write it at most this often.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# A bound on the memory the cache may take; past it the cache starts afresh.
CACHE_MAX_ENTRIES = 10_000

# digest -> (monotonic expiry, token with its user, credentials generation it was verified under)
_verified: dict[str, tuple[float, ApiToken, str]] = {}


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
        return self.authenticate_key(raw_key, request)

    def authenticate_key(self, raw_key: str, request=None):
        digest = token_digest(raw_key)
        ttl = settings.API_TOKEN_CACHE_SECONDS
        cached = _verified.get(digest)
        if cached is not None and cached[0] <= time.monotonic():
            cached = None
        # Read before any look-up: a change made after this read starts a generation the
        # token is not remembered under.
        generation = None
        if ttl > 0:
            generation = self._generation(request, cached[1].user) if cached else credentials.current()
        if cached is not None and generation is not None and cached[2] == generation:
            token = cached[1]
        else:
            token = self._look_up(raw_key, digest, generation)
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

    @staticmethod
    def _generation(request, user) -> str | None:
        """The credentials generation, read in the round trip that counts this request for
        the view's per-user throttle when it has one (the throttle then uses that count)."""
        view = (getattr(request, "parser_context", None) or {}).get("view")
        # Only the per-user throttle is made (the view makes all of its own afterwards);
        # throttle_classes is what DRF's get_throttles() instantiates.
        throttle_class = (
            next((c for c in view.throttle_classes if issubclass(c, UserRateThrottle)), None) if view else None
        )
        throttle = throttle_class() if throttle_class is not None else None
        if throttle is None or throttle.rate is None:
            return credentials.current()
        key = throttle.cache_format % {"scope": throttle.scope, "ident": user.pk}  # as get_cache_key names it
        generation, counted = credentials.current_counting(key, throttle.duration)
        if counted is not None:
            request.throttle_counted = {key: counted}
        return generation

    def _look_up(self, raw_key: str, digest: str, generation: str | None) -> ApiToken:
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
        if ttl > 0 and generation is not None:
            # Loads the permissions onto the user object now, so the copies handed to
            # later requests carry them and never query for them.
            token.user.get_all_permissions()
            if len(_verified) >= CACHE_MAX_ENTRIES:
                _verified.clear()
            _verified[digest] = (time.monotonic() + ttl, token, generation)
        else:
            _verified.pop(digest, None)
        return token

    def authenticate_header(self, request):
        return 'Token realm="api"'
