"""Read replicas: reads of an HTTP request go to a replica, everything else to the primary.

Installed by config/settings.py only when ``DATABASE_REPLICA_URLS`` names replicas (the
aliases ``replica_0``, ``replica_1``, ...); without it there is no router and no middleware.
docs/read-replicas.md is the manual. The rules, in the order the router applies them:

- Outside an HTTP request (management commands, the shell, migrations) everything goes to
  the primary: only ``ReplicaMiddleware`` marks a request whose reads may go elsewhere.
- Every write goes to the primary (``db_for_write``), and so does every later read of the
  same request (writes to the primary-only tables below excepted: a token's last use is
  bookkeeping). ``select_for_update`` and ``get_or_create`` are writes to Django.
- A request with an unsafe method (POST, PUT, PATCH, DELETE) reads from the primary
  throughout: what it validates against is what it writes over.
- A read inside a transaction on the primary (``transaction.atomic``, ATOMIC_REQUESTS)
  stays on the primary, in the transaction.
- The tables that guard access (users, groups, permissions, sessions, API tokens) and
  idempotency keys are always read from the primary, so revoking a token or a role takes
  effect as it does without replicas.
- Read-your-writes: after a user's unsafe request, a marker in the shared cache keeps that
  user's reads on the primary for ``DATABASE_REPLICA_STICKY_SECONDS``, whichever token,
  session or process they come through next.
- Otherwise a request picks one replica at random for all its reads. A replica that cannot
  be reached is skipped for ``DATABASE_REPLICA_RETRY_SECONDS`` (a circuit breaker per
  process, so requests do not each pay a connect timeout); a safe request that failed on a
  replica is run again on the primary, so stopping a replica loses no request.
"""

from __future__ import annotations

import logging
import random
import time
from contextvars import ContextVar

from django.conf import settings
from django.core.cache import cache
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.utils.functional import empty

logger = logging.getLogger(__name__)

PRIMARY = DEFAULT_DB_ALIAS
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Read from the primary always: access checks must see revocations at once, and an
# idempotency key is claimed inside the primary's transaction anyway.
PRIMARY_ONLY_APPS = frozenset({"auth", "sessions"})
PRIMARY_ONLY_MODELS = frozenset({"widgets.apitoken", "widgets.idempotencykey"})
MARKER = "replica-sticky:user:{}"


def replica_aliases() -> list[str]:
    return [alias for alias in settings.DATABASES if alias != PRIMARY]


# --- Circuit breaker (per process) ------------------------------------------------------------

_down_until: dict[str, float] = {}


def is_down(alias: str) -> bool:
    return _down_until.get(alias, 0.0) > time.monotonic()


def trip(alias: str, error: object = None) -> None:
    """Skip ``alias`` for DATABASE_REPLICA_RETRY_SECONDS; after that the next read tries it again.
    ``error`` (an exception or a description) goes into the log line."""
    if not is_down(alias):
        logger.warning(
            "Read replica %s unreachable, reading from the primary for %ss: %s",
            alias,
            settings.DATABASE_REPLICA_RETRY_SECONDS,
            error,
        )
    _down_until[alias] = time.monotonic() + settings.DATABASE_REPLICA_RETRY_SECONDS
    connections[alias].close()


def _connected(alias: str) -> bool:
    """Connects to ``alias`` if need be (with the health check of a reused connection, once
    per request); a failure trips the breaker."""
    connection = connections[alias]
    try:
        connection.close_if_health_check_failed()
        connection.ensure_connection()
    except DatabaseError as exc:
        trip(alias, exc)
        return False
    return True


def replica_health() -> dict[str, str]:
    """``{alias: "ok" | "unreachable"}`` for /readyz. A replica the breaker skips is reported
    unreachable without a new attempt, so a probe never waits on a connect timeout twice."""
    health = {}
    for alias in replica_aliases():
        ok = False
        if not is_down(alias):
            try:
                with connections[alias].cursor() as cursor:
                    cursor.execute("SELECT 1")
                ok = True
            except DatabaseError as exc:
                trip(alias, exc)
        health[alias] = "ok" if ok else "unreachable"
    return health


# --- Read-your-writes marker ----------------------------------------------------------------


def _user_id(request) -> int | None:
    """The authenticated user's id, or None. DRF puts a token's user on the Django request too;
    a session's lazy user is loaded here if need be (from the primary, like every auth read)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    return user.pk


def _wrote_recently(request) -> bool:
    user_id = _user_id(request)
    if user_id is None:
        return False
    try:
        return bool(cache.get(MARKER.format(user_id)))
    except Exception:  # the cache is down: the primary is the side that cannot be stale
        logger.warning("Cache unavailable: reading from the primary", exc_info=True)
        return True


def _remember_write(request) -> None:
    user = getattr(request, "user", None)
    # A user nobody looked at did not write through an authenticated view.
    if user is None or getattr(user, "_wrapped", None) is empty or not user.is_authenticated:
        return
    try:
        cache.set(MARKER.format(user.pk), 1, settings.DATABASE_REPLICA_STICKY_SECONDS)
    except Exception:
        logger.warning("Cache unavailable: could not keep user %s on the primary", user.pk, exc_info=True)


# --- Per-request state ----------------------------------------------------------------------


class _Request:
    __slots__ = ("request", "primary", "replica")

    def __init__(self, request, *, primary: bool):
        self.request = request
        self.primary = primary  # every read of this request goes to the primary
        self.replica: str | None = None  # chosen at the first read that may use one

    def choose(self) -> str:
        if self.replica is None:
            self.replica = PRIMARY
            if not _wrote_recently(self.request):
                candidates = [alias for alias in replica_aliases() if not is_down(alias)]
                random.shuffle(candidates)
                self.replica = next((alias for alias in candidates if _connected(alias)), PRIMARY)
        return self.replica


def _primary_only(model) -> bool:
    return model._meta.app_label in PRIMARY_ONLY_APPS or model._meta.label_lower in PRIMARY_ONLY_MODELS


_current: ContextVar[_Request | None] = ContextVar("replica_request", default=None)


class ReplicaRouter:
    """Django database router (settings.DATABASE_ROUTERS); see the module docstring."""

    def db_for_read(self, model, **hints):
        state = _current.get()
        if state is None or state.primary or _primary_only(model):
            return PRIMARY
        if connections[PRIMARY].in_atomic_block:
            return PRIMARY
        return state.choose()

    def db_for_write(self, model, **hints):
        state = _current.get()
        # The rest of this request reads what it wrote. Bookkeeping in the primary-only tables
        # (a token's last use, a session) is read from the primary anyway and moves nothing.
        if state is not None and not _primary_only(model):
            state.primary = True
        return PRIMARY

    def allow_relation(self, obj1, obj2, **hints):
        # Replicas hold the primary's data: an object read from one may point at one from another.
        aliases = settings.DATABASES.keys()
        if obj1._state.db in aliases and obj2._state.db in aliases:
            return True
        return None

    def allow_migrate(self, db, app_label, **hints):
        # A replica follows the primary's schema by replication; it is never migrated itself.
        return False if db != PRIMARY else None


class ReplicaMiddleware:
    """Marks which requests may read from a replica; remembers who wrote; retries on the primary
    a safe request that a failing replica broke."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        safe = request.method in SAFE_METHODS
        state = _Request(request, primary=not safe)
        reset = _current.set(state)
        try:
            for alias in replica_aliases():
                # Django sets this on a database error and clears it when the connection is
                # replaced; start the request with a clean slate to tell this request's errors.
                connections[alias].errors_occurred = False
            response = self.get_response(request)
            replica = state.replica
            if (
                safe
                and replica not in (None, PRIMARY)
                and response.status_code >= 500
                and connections[replica].errors_occurred
            ):
                trip(replica, f"{request.method} {request.path} answered {response.status_code}")
                _current.set(_Request(request, primary=True))
                response = self.get_response(request)
        finally:
            _current.reset(reset)
        if not safe:
            _remember_write(request)
        return response
