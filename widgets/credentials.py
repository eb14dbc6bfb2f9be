"""When any credential changes: a generation shared by every process and instance.

The API remembers verified tokens (``widgets.api.authentication``). So that revoking a
token, deactivating a user or changing anyone's roles takes effect on the very next
request on every process, each change sets a new *generation* in the shared cache
(Redis), and a remembered token is used only while the generation it was verified under
is still the current one. One cheap GET per request, against a database look-up and
permission queries.

Without a shared cache (the process-local cache of a setup without REDIS_URL) no process
could tell another that something changed, so nothing is remembered across requests at
all (``shared()`` is False).

What counts as a change: tokens revoked or deleted, a user saved with a changed
``is_active`` / ``is_superuser`` (or saved whole, as the admin does) or deleted, group
membership or permissions changed, a group or permission deleted. Django's own auth admin
makes most of these changes, so they are caught with its model signals (connected in
``WidgetsConfig.ready``): this is cache bookkeeping, not a business rule.
"""

import itertools
import logging
import os
import secrets

from django.core.cache import caches
from django.core.cache.backends.redis import RedisCache
from django.db import connection, transaction
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

KEY = "credentials-generation"
# Key that rotated generations expire on, so an abandoned one does not stay in Redis forever;
# far longer than any token cache lifetime.
GENERATION_SECONDS = 7 * 24 * 3600


def _redis():
    cache = caches["default"]
    if not isinstance(cache, RedisCache):
        return None, None
    return cache._cache.get_client(write=True), cache.make_key(KEY)


def shared() -> bool:
    """Whether a generation can be shared between processes (the cache is Redis)."""
    return isinstance(caches["default"], RedisCache)


def current() -> str | None:
    """The current generation, or None when it cannot be known (no Redis, or Redis
    unavailable): then nothing remembered may be trusted."""
    client, key = _redis()
    if client is None:
        return None
    try:
        value = client.get(key)
        if value is None:  # first use, or Redis lost its data: start a new generation
            client.set(key, secrets.token_hex(8), nx=True, ex=GENERATION_SECONDS)
            value = client.get(key)
    except RedisError:
        return None
    return value.decode() if value is not None else None


# A fresh generation to start with when none is set, offered with every count (the Lua
# script uses it only then): unique without drawing random bytes for every request, from a
# random prefix per process (drawn again in a forked child) and a counter.
_fresh = {}


def _reseed_fresh_generations() -> None:
    _fresh.update(prefix=secrets.token_hex(8), count=itertools.count())


_reseed_fresh_generations()
os.register_at_fork(after_in_child=_reseed_fresh_generations)


def _fresh_generation() -> str:
    return f"{_fresh['prefix']}-{next(_fresh['count'])}"


def current_counting(counter: str, window_seconds: float) -> tuple[str | None, tuple[int, float] | None]:
    """``current()`` and, in the same Redis round trip, one more count on the throttle
    counter ``counter`` (``config.cache.RedisCache.count_in_window``): ``(generation,
    (count, seconds left in the window))``, or ``(None, None)`` if Redis cannot answer."""
    cache = caches["default"]
    if not hasattr(cache, "count_in_window_and_get"):
        return current(), None
    try:
        count, left, value = cache.count_in_window_and_get(
            counter, window_seconds, KEY, _fresh_generation(), GENERATION_SECONDS
        )
    except RedisError:
        return None, None
    return value, (count, left)


def changed(**_signal_kwargs) -> None:
    """Start a new generation: every remembered token is verified again on its next use.

    Now, and again when the current transaction commits: a process that re-verifies a token
    in between still reads the old rows, and must not keep what it read.
    """
    _new_generation()
    if connection.in_atomic_block:
        transaction.on_commit(_new_generation)


def _new_generation() -> None:
    # A random value rather than a counter, so a generation is never reused (Redis may lose
    # a counter and count it up again).
    client, key = _redis()
    if client is None:
        return
    try:
        client.set(key, secrets.token_hex(8), ex=GENERATION_SECONDS)
    except RedisError as exc:
        # Redis is unavailable, so current() is None and no process trusts its memory now.
        logger.warning("Credentials generation not bumped (Redis unavailable): %s", exc)


AUDITED_USER_FIELDS = {"is_active", "is_superuser"}


def _token_saved(created=False, **kwargs):
    if not created:  # a new token changes nothing anyone had
        changed()


def _user_saved(update_fields=None, **kwargs):
    # A login saves last_login only: no change to what the user may do.
    if update_fields is None or AUDITED_USER_FIELDS & set(update_fields):
        changed()


def connect_signals() -> None:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from .models import ApiToken

    user = get_user_model()
    uid = "widgets.credentials"
    post_save.connect(_user_saved, sender=user, dispatch_uid=f"{uid}.user_saved")
    post_save.connect(_token_saved, sender=ApiToken, dispatch_uid=f"{uid}.token_saved")
    for model in (user, Group, Permission, ApiToken):
        post_delete.connect(changed, sender=model, dispatch_uid=f"{uid}.{model.__name__}_deleted")
    for relation in (user.groups.through, user.user_permissions.through, Group.permissions.through):
        m2m_changed.connect(changed, sender=relation, dispatch_uid=f"{uid}.{relation.__name__}")
