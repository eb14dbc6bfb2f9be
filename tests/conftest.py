"""Shared fixtures: users in each role, authenticated API clients, and the ledger check.

After every test that touched the database, ``manage.py check_ledger`` must pass: the
ledger invariant is asserted everywhere, not only in the tests written for it. So must the
reservation invariant: each widget's ``reserved`` (as the API computes it) is the sum of
its items in active, unexpired reservations, and 0 <= reserved <= stock; and its ``held``
column is the sum of its items in reservations stored as active (expired or not).
"""

import itertools
import os
import uuid
from collections import Counter

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from widgets import models
from widgets.models import ApiToken, Reservation, ReservationItem, Widget

ROLES = ["viewer", "clerk", "manager"]
IS_POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres", "postgresql"))
postgres_only = pytest.mark.skipif(not IS_POSTGRES, reason="needs PostgreSQL: set DATABASE_URL")

_names = itertools.count()
_RUN = uuid.uuid4().hex[:8]
_cache_prefixes = (f"test-{_RUN}-{n}" for n in itertools.count())


@pytest.fixture(autouse=True)
def _test_settings(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only
    # The test client speaks plain HTTP; the HTTPS redirect is rehearsed against a real server.
    settings.SECURE_SSL_REDIRECT = False
    # Production serves the hashed files collectstatic writes (rehearsed by the deploy
    # check); tests read the source files directly, as DEBUG does.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    # Tests revoke tokens and change roles mid-test and expect it at once; the token
    # cache has its own tests (tests/test_performance.py).
    settings.API_TOKEN_CACHE_SECONDS = 0
    # Throttle counts live in the cache. A fresh key prefix per test gives each test its own
    # counts without flushing a Redis database that a parallel run may share; the keys expire
    # with their throttle window.
    settings.CACHES = {"default": {**settings.CACHES["default"], "KEY_PREFIX": next(_cache_prefixes)}}
    # A process remembers a table's size from the statistics for a minute (widgets.models,
    # bounded_count); each test starts from its own tables' statistics, not an earlier test's.
    models._table_sizes.clear()


@pytest.fixture(scope="session", autouse=True)
def _forget_this_runs_cache_keys():
    yield
    if os.environ.get("REDIS_URL"):
        import redis

        client = redis.Redis.from_url(os.environ["REDIS_URL"])
        for key in client.scan_iter(f"test-{_RUN}-*", count=1000):
            client.delete(key)


@pytest.fixture(autouse=True)
def _ledger_invariant_holds(request):
    names = set(request.fixturenames)
    if not (request.node.get_closest_marker("django_db") or {"db", "transactional_db"} & names):
        yield
        return
    # Set the database up from here, so that the check below runs before it is torn down.
    request.getfixturevalue("transactional_db" if "transactional_db" in names else "db")
    yield
    call_command("check_ledger", verbosity=0)
    assert_reservation_invariant()


def assert_reservation_invariant():
    """reserved (the SQL annotation the API serves) == the items of active, unexpired
    reservations summed here in Python, and 0 <= reserved <= stock, for every widget."""
    now = timezone.now()
    expected, expected_held = Counter(), Counter()
    for widget_id, quantity, status, expires_at in ReservationItem.objects.values_list(
        "widget_id", "quantity", "reservation__status", "reservation__expires_at"
    ):
        if status == Reservation.Status.ACTIVE:
            expected_held[widget_id] += quantity
            if expires_at > now:
                expected[widget_id] += quantity
    broken = [
        (pk, stock, reserved, expected[pk])
        for pk, stock, reserved in Widget.objects.with_availability(now).values_list("pk", "stock", "reserved")
        if reserved != expected[pk] or not 0 <= reserved <= stock
    ]
    assert not broken, f"reservation invariant broken (widget, stock, reserved, expected): {broken}"
    # held (the column the one-statement writes check) == the items of reservations stored as
    # active, expired or not.
    broken = [(pk, held, expected_held[pk]) for pk, held in Widget.objects.values_list("pk", "held")]
    broken = [row for row in broken if row[1] != row[2]]
    assert not broken, f"held invariant broken (widget, held, expected): {broken}"


def make_user(role=None, **extra):
    user = User.objects.create_user(
        username=extra.pop("username", f"user{next(_names)}"), password="pw-Secret-123", **extra
    )
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def token_client(user, **token_options):
    _, raw_key = ApiToken.objects.issue(user=user, **token_options)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {raw_key}")
    client.user, client.raw_key = user, raw_key
    return client


@pytest.fixture
def anon():
    return APIClient()


@pytest.fixture
def no_role(db):
    return token_client(make_user())


@pytest.fixture
def viewer(db):
    return token_client(make_user("viewer"))


@pytest.fixture
def clerk(db):
    return token_client(make_user("clerk"))


@pytest.fixture
def manager(db):
    return token_client(make_user("manager"))


@pytest.fixture
def superuser(db):
    return token_client(make_user(is_superuser=True, is_staff=True))


@pytest.fixture
def create_widget(manager):
    """Create a widget through the API, as a manager would."""

    def create(**fields):
        fields.setdefault("name", f"Widget {next(_names)}")
        response = manager.post("/api/widgets/", fields, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return create


@pytest.fixture
def create_category(manager):
    def create(**fields):
        fields.setdefault("name", f"Category {next(_names)}")
        response = manager.post("/api/categories/", fields, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return create
