"""The permission matrix: every URL pattern of the project, every method, every role.

``MATRIX`` states the expected status for each; the test walks ``get_resolver()`` so that
an endpoint added without a row here fails ``test_every_url_pattern_is_in_the_matrix``.

Roles, in column order: anonymous; authenticated without a role; viewer; clerk; manager;
superuser; a manager's expired token; a manager's revoked token. The four role users are
staff members, as the people who use the admin are: they carry an API token (used by the
API) and an admin session (used by the admin). The expired and revoked tokens come without
a session. API endpoints are checked with GET, HEAD, OPTIONS, POST, PUT, PATCH and DELETE
(bodies are ``{}``, so a permitted write is usually a 400); Django's own pages (admin, login
forms, health) with GET and POST. Every request runs in a transaction that is rolled back,
so a DELETE does not change what the next role sees.
"""

import re
from datetime import timedelta
from http.cookies import SimpleCookie

import pytest
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from tests.conftest import make_user
from webhooks import services as webhook_services
from widgets import services
from widgets.models import ApiToken, ChangeLogEntry, StockMovement

pytestmark = pytest.mark.django_db

ROLES = ["anonymous", "no_role", "viewer", "clerk", "manager", "superuser", "expired", "revoked"]
API_METHODS = ["GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE"]
PAGE_METHODS = ["GET", "POST"]

# Anonymous clients may reach these and nothing else: health probes, the API schema and
# docs, and the login (and logout) endpoints. Everything else is 401 or a login redirect.
PUBLIC = {
    "healthz",
    "readyz",
    "api/schema/",
    "api/docs/",
    "api/redoc/",
    "api/auth/token/",
    "api-auth/login/",
    "api-auth/logout/",
    "admin/login/",
}


def row(statuses: str) -> list[int]:
    codes = [int(code) for code in statuses.split()]
    assert len(codes) == len(ROLES), statuses
    return codes


# fmt: off
MATRIX = {
    # roles:        ano nor vwr clk mgr sup exp rev  (see ROLES)
    # -- Site: the root redirects to /api/; health probes answer everyone.
    "": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "healthz": {
        "GET":     "200 200 200 200 200 200 200 200",
        "POST":    "200 200 200 200 200 200 200 200",
    },
    "readyz": {
        "GET":     "200 200 200 200 200 200 200 200",
        "POST":    "200 200 200 200 200 200 200 200",
    },
    # -- The login forms: open to all, throttled (test_throttling.py).
    "admin/login/": {
        "GET":     "200 302 302 302 302 302 200 200",
        "POST":    "200 200 200 200 200 200 200 200",
    },
    "api-auth/login/": {
        "GET":     "200 200 200 200 200 200 200 200",
        "POST":    "200 200 200 200 200 200 200 200",
    },
    # -- Admin: staff sessions only; the rest are sent to the login form. Inside, Django's
    # model permissions: roles see what their group may view; only the superuser manages
    # users, groups and tokens; the ledger and the change log are read-only for everyone.
    "admin/": {
        "GET":     "302 200 200 200 200 200 302 302",
        "POST":    "302 200 200 200 200 200 302 302",
    },
    "admin/logout/": {
        "GET":     "302 405 405 405 405 405 302 302",
        "POST":    "302 200 200 200 200 200 302 302",
    },
    "admin/password_change/": {
        "GET":     "302 200 200 200 200 200 302 302",
        "POST":    "302 200 200 200 200 200 302 302",
    },
    "admin/password_change/done/": {
        "GET":     "302 200 200 200 200 200 302 302",
        "POST":    "302 405 405 405 405 405 302 302",
    },
    "admin/autocomplete/": {
        "GET":     "302 403 403 403 403 403 302 302",
        "POST":    "302 405 405 405 405 405 302 302",
    },
    "admin/jsi18n/": {
        "GET":     "302 200 200 200 200 200 302 302",
        "POST":    "302 405 405 405 405 405 302 302",
    },
    "admin/r/<content_type_id>/<object_id>/": {
        "GET":     "302 404 404 404 404 404 302 302",
        "POST":    "302 404 404 404 404 404 302 302",
    },
    "admin/auth/group/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/group/add/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/group/<object_id>/history/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/group/<object_id>/delete/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/group/<object_id>/change/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/group/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "admin/auth/user/<id>/password/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/user/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/user/add/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/user/<object_id>/history/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/user/<object_id>/delete/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/user/<object_id>/change/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/auth/user/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "admin/widgets/widget/<object_id>/adjust/": {
        "GET":     "302 403 403 200 200 200 302 302",
        "POST":    "302 403 403 200 200 200 302 302",
    },
    # The stock dashboard (view permission) and the CSV import (managers).
    "admin/widgets/widget/dashboard/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/widget/import/": {
        "GET":     "302 403 403 403 200 200 302 302",
        "POST":    "302 403 403 403 200 200 302 302",
    },
    "admin/widgets/widget/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/widget/add/": {
        "GET":     "302 403 403 403 200 200 302 302",
        "POST":    "302 403 403 403 200 200 302 302",
    },
    "admin/widgets/widget/<object_id>/history/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/widget/<object_id>/delete/": {
        "GET":     "302 403 403 403 200 200 302 302",
        "POST":    "302 403 403 403 200 200 302 302",
    },
    "admin/widgets/widget/<object_id>/change/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 403 403 200 200 302 302",
    },
    "admin/widgets/widget/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "admin/widgets/category/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/category/add/": {
        "GET":     "302 403 403 403 200 200 302 302",
        "POST":    "302 403 403 403 200 200 302 302",
    },
    "admin/widgets/category/<object_id>/history/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/category/<object_id>/delete/": {
        "GET":     "302 403 403 403 200 200 302 302",
        "POST":    "302 403 403 403 200 200 302 302",
    },
    "admin/widgets/category/<object_id>/change/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 403 403 200 200 302 302",
    },
    "admin/widgets/category/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "admin/widgets/stockmovement/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/stockmovement/add/": {
        "GET":     "302 403 403 403 403 403 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/stockmovement/<object_id>/history/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/stockmovement/<object_id>/delete/": {
        "GET":     "302 403 403 403 403 403 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/stockmovement/<object_id>/change/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/stockmovement/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "admin/widgets/reservation/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/reservation/add/": {
        "GET":     "302 403 403 403 403 403 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/reservation/<object_id>/history/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/reservation/<object_id>/delete/": {
        "GET":     "302 403 403 403 403 403 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/reservation/<object_id>/change/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/reservation/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "admin/widgets/apitoken/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/widgets/apitoken/add/": {
        "GET":     "302 403 403 403 403 403 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/apitoken/<object_id>/history/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/widgets/apitoken/<object_id>/delete/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/widgets/apitoken/<object_id>/change/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 302 302 302",
    },
    "admin/widgets/apitoken/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "admin/widgets/changelogentry/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/changelogentry/add/": {
        "GET":     "302 403 403 403 403 403 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/changelogentry/<object_id>/history/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 200 200 200 200 302 302",
    },
    "admin/widgets/changelogentry/<object_id>/delete/": {
        "GET":     "302 403 403 403 403 403 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/changelogentry/<object_id>/change/": {
        "GET":     "302 403 200 200 200 200 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/widgets/changelogentry/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    # -- Webhooks in the admin: superusers only (the API serves managers).
    "admin/webhooks/webhooksubscription/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/webhooks/webhooksubscription/add/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/webhooks/webhooksubscription/<object_id>/history/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/webhooks/webhooksubscription/<object_id>/delete/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/webhooks/webhooksubscription/<object_id>/change/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/webhooks/webhooksubscription/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "admin/webhooks/delivery/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/webhooks/delivery/add/": {
        "GET":     "302 403 403 403 403 403 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/webhooks/delivery/<object_id>/history/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/webhooks/delivery/<object_id>/delete/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 200 302 302",
    },
    "admin/webhooks/delivery/<object_id>/change/": {
        "GET":     "302 403 403 403 403 200 302 302",
        "POST":    "302 403 403 403 403 403 302 302",
    },
    "admin/webhooks/delivery/<object_id>/": {
        "GET":     "302 302 302 302 302 302 302 302",
        "POST":    "302 302 302 302 302 302 302 302",
    },
    "admin/<app_label>/": {
        "GET":     "302 404 200 200 200 200 302 302",
        "POST":    "302 404 200 200 200 200 302 302",
    },
    "admin/<url>": {
        "GET":     "302 404 404 404 404 404 302 302",
        "POST":    "302 404 404 404 404 404 302 302",
    },
    # -- Browsable API logout (POST only).
    "api-auth/logout/": {
        "GET":     "405 405 405 405 405 405 405 405",
        "POST":    "200 200 200 200 200 200 200 200",
    },
    # -- API schema and docs: public, read-only.
    "api/schema/": {
        "GET":     "200 200 200 200 200 200 200 200",
        "HEAD":    "200 200 200 200 200 200 200 200",
        "OPTIONS": "200 200 200 200 200 200 200 200",
        "POST":    "405 405 405 405 405 405 405 405",
        "PUT":     "405 405 405 405 405 405 405 405",
        "PATCH":   "405 405 405 405 405 405 405 405",
        "DELETE":  "405 405 405 405 405 405 405 405",
    },
    "api/docs/": {
        "GET":     "200 200 200 200 200 200 200 200",
        "HEAD":    "200 200 200 200 200 200 200 200",
        "OPTIONS": "405 405 405 405 405 405 405 405",
        "POST":    "405 405 405 405 405 405 405 405",
        "PUT":     "405 405 405 405 405 405 405 405",
        "PATCH":   "405 405 405 405 405 405 405 405",
        "DELETE":  "405 405 405 405 405 405 405 405",
    },
    "api/redoc/": {
        "GET":     "200 200 200 200 200 200 200 200",
        "HEAD":    "200 200 200 200 200 200 200 200",
        "OPTIONS": "405 405 405 405 405 405 405 405",
        "POST":    "405 405 405 405 405 405 405 405",
        "PUT":     "405 405 405 405 405 405 405 405",
        "PATCH":   "405 405 405 405 405 405 405 405",
        "DELETE":  "405 405 405 405 405 405 405 405",
    },
    # -- API: credentials for a token (public, throttled); then role-based access. 405 comes
    # before 403 for a method the endpoint does not offer; read-only endpoints are 405 for all.
    "api/auth/token/": {
        "GET":     "405 405 405 405 405 405 405 405",
        "HEAD":    "405 405 405 405 405 405 405 405",
        "OPTIONS": "200 200 200 200 200 200 200 200",
        "POST":    "400 400 400 400 400 400 400 400",
        "PUT":     "405 405 405 405 405 405 405 405",
        "PATCH":   "405 405 405 405 405 405 405 405",
        "DELETE":  "405 405 405 405 405 405 405 405",
    },
    "api/categories/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 403 403 403 400 400 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/categories/<pk>/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 403 403 403 400 400 401 401",
        "PATCH":   "401 403 403 403 200 200 401 401",
        "DELETE":  "401 403 403 403 409 409 401 401",
    },
    "api/widgets/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 403 403 403 400 400 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/widgets/<pk>/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 403 403 403 400 400 401 401",
        "PATCH":   "401 403 403 403 200 200 401 401",
        "DELETE":  "401 403 403 403 204 204 401 401",
    },
    "api/widgets/<pk>/adjust/": {
        "GET":     "401 405 405 405 405 405 401 401",
        "HEAD":    "401 405 405 405 405 405 401 401",
        "OPTIONS": "401 403 403 200 200 200 401 401",
        "POST":    "401 403 403 400 400 400 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/widgets/<pk>/movements/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/movements/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/movements/<pk>/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/changes/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/changes/<pk>/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    # -- Batch adjustments: POST only, for whoever may adjust stock.
    "api/adjustments/": {
        "GET":     "401 405 405 405 405 405 401 401",
        "HEAD":    "401 405 405 405 405 405 401 401",
        "OPTIONS": "401 403 403 200 200 200 401 401",
        "POST":    "401 403 403 400 400 400 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    # -- Reservations: viewers read; clerks (and up) reserve, commit, release and extend.
    "api/reservations/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 403 403 400 400 400 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/reservations/<pk>/": {
        "GET":     "401 403 200 200 200 200 401 401",
        "HEAD":    "401 403 200 200 200 200 401 401",
        "OPTIONS": "401 403 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/reservations/<pk>/commit/": {
        "GET":     "401 405 405 405 405 405 401 401",
        "HEAD":    "401 405 405 405 405 405 401 401",
        "OPTIONS": "401 403 403 200 200 200 401 401",
        "POST":    "401 403 403 201 201 201 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/reservations/<pk>/release/": {
        "GET":     "401 405 405 405 405 405 401 401",
        "HEAD":    "401 405 405 405 405 405 401 401",
        "OPTIONS": "401 403 403 200 200 200 401 401",
        "POST":    "401 403 403 200 200 200 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/reservations/<pk>/extend/": {
        "GET":     "401 405 405 405 405 405 401 401",
        "HEAD":    "401 405 405 405 405 405 401 401",
        "OPTIONS": "401 403 403 200 200 200 401 401",
        "POST":    "401 403 403 400 400 400 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    # -- Own tokens: any authenticated user, own tokens only.
    "api/auth/tokens/": {
        "GET":     "401 200 200 200 200 200 401 401",
        "HEAD":    "401 200 200 200 200 200 401 401",
        "OPTIONS": "401 200 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/auth/tokens/<pk>/": {
        "GET":     "401 200 200 200 200 200 401 401",
        "HEAD":    "401 200 200 200 200 200 401 401",
        "OPTIONS": "401 200 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 204 204 204 204 204 401 401",
    },
    # -- Webhooks (docs/events.md): the manager role; superusers have every permission.
    "api/webhooks/": {
        "GET":     "401 403 403 403 200 200 401 401",
        "HEAD":    "401 403 403 403 200 200 401 401",
        "OPTIONS": "401 403 403 403 200 200 401 401",
        "POST":    "401 403 403 403 400 400 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/webhooks/<pk>/": {
        "GET":     "401 403 403 403 200 200 401 401",
        "HEAD":    "401 403 403 403 200 200 401 401",
        "OPTIONS": "401 403 403 403 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 403 403 403 400 400 401 401",
        "PATCH":   "401 403 403 403 200 200 401 401",
        "DELETE":  "401 403 403 403 204 204 401 401",
    },
    "api/webhooks/<pk>/deliveries/": {
        "GET":     "401 403 403 403 200 200 401 401",
        "HEAD":    "401 403 403 403 200 200 401 401",
        "OPTIONS": "401 403 403 403 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/webhooks/<pk>/deliveries/<delivery_id>/redeliver/": {
        "GET":     "401 405 405 405 405 405 401 401",
        "HEAD":    "401 405 405 405 405 405 401 401",
        "OPTIONS": "401 403 403 403 200 200 401 401",
        "POST":    "401 403 403 403 202 202 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/webhooks/<pk>/ping/": {
        "GET":     "401 405 405 405 405 405 401 401",
        "HEAD":    "401 405 405 405 405 405 401 401",
        "OPTIONS": "401 403 403 403 200 200 401 401",
        "POST":    "401 403 403 403 202 202 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    "api/webhooks/<pk>/rotate-secret/": {
        "GET":     "401 405 405 405 405 405 401 401",
        "HEAD":    "401 405 405 405 405 405 401 401",
        "OPTIONS": "401 403 403 403 200 200 401 401",
        "POST":    "401 403 403 403 200 200 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
    # -- The API root: any authenticated user.
    "api/": {
        "GET":     "401 200 200 200 200 200 401 401",
        "HEAD":    "401 200 200 200 200 200 401 401",
        "OPTIONS": "401 200 200 200 200 200 401 401",
        "POST":    "401 405 405 405 405 405 401 401",
        "PUT":     "401 405 405 405 405 405 401 401",
        "PATCH":   "401 405 405 405 405 405 401 401",
        "DELETE":  "401 405 405 405 405 405 401 401",
    },
}
# fmt: on


# --- Walking the URL configuration -----------------------------------------------------------------

NAMED_GROUP = re.compile(r"\(\?P<(\w+)>")


def _readable(pattern: str) -> str:
    """``^widgets/(?P<pk>[0-9]+)\\.(?P<format>[a-z0-9]+)/?$`` -> ``widgets/<pk>.<format>/?``"""
    if pattern.startswith("^") or pattern.endswith("$"):
        out, i = [], 0
        while i < len(pattern):
            match = NAMED_GROUP.match(pattern, i)
            if match:  # skip to the group's closing parenthesis
                depth, i = 1, match.end()
                while depth:
                    depth += {"(": 1, ")": -1}.get(pattern[i], 0) if pattern[i - 1] != "\\" else 0
                    i += 1
                out.append(f"<{match.group(1)}>")
            else:
                out.append(pattern[i])
                i += 1
        pattern = "".join(out).removeprefix("^").removesuffix("$").replace("\\.", ".")
    return re.sub(r"<\w+:(\w+)>", r"<\1>", pattern)


def _walk(resolver, prefix=""):
    for pattern in resolver.url_patterns:
        route = prefix + _readable(str(pattern.pattern))
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern, route)
        else:
            yield route


def url_patterns() -> list[str]:
    """Every URL pattern of the project, readable, without duplicates."""
    return list(dict.fromkeys(_walk(get_resolver())))


def base_pattern(pattern: str) -> str:
    """A format-suffix variant (``widgets.<format>/?``) answers like its base (``widgets/``)."""
    if "<format>" not in pattern:
        return pattern
    base = pattern.replace(".<format>/?", "").replace("<format>", "")
    return base if base.endswith("/") else base + "/"


# --- The world each request sees -------------------------------------------------------------------


@pytest.fixture
def world(settings):
    # Thousands of requests from one address: throttling is tested in test_throttling.py.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"anon": "100000/hour", "user": "100000/hour", "login": "100000/hour"},
    }
    users = {
        role: make_user(role if role in ("viewer", "clerk", "manager") else None, is_staff=True)
        for role in ["no_role", "viewer", "clerk", "manager"]
    }
    users["superuser"] = make_user(is_staff=True, is_superuser=True)
    actor = make_user("manager")
    category = services.create_category(user=actor, name="Secret Category")
    widget = services.create_widget(user=actor, name="Secret Widget", sku="SECRET-1", category=category)
    stocked = services.create_widget(user=actor, name="Stocked Widget", sku="SECRET-2", stock=5)
    reservation = services.create_reservation(
        user=actor, reference="Secret Reservation", items=[{"widget": stocked.pk, "quantity": 1}]
    )

    subscription = webhook_services.create_subscription(user=actor, url="https://93.184.216.34/hook", event_types=["*"])
    delivery = webhook_services.ping(subscription=subscription)

    clients = {"anonymous": APIClient()}
    own_tokens = {}
    for role, user in users.items():
        _, key = ApiToken.objects.issue(user=user)
        own_tokens[role], _ = ApiToken.objects.issue(user=user, name="second")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        client.force_login(user)
        clients[role] = client
    for role, spoil in [
        ("expired", {"expires_at": timezone.now() - timedelta(days=1)}),
        ("revoked", {"revoked_at": timezone.now()}),
    ]:
        token, key = ApiToken.objects.issue(user=make_user("manager"))
        ApiToken.objects.filter(pk=token.pk).update(**spoil)
        clients[role] = APIClient()
        clients[role].credentials(HTTP_AUTHORIZATION=f"Token {key}")

    objects = {
        "widgets": widget.pk,
        "categories": category.pk,
        "movements": StockMovement.objects.get(widget=stocked).pk,
        "changes": ChangeLogEntry.objects.first().pk,
        "reservations": reservation.pk,
        "widgets/reservation": reservation.pk,
        "auth/group": Group.objects.get(name="viewer").pk,
        "auth/user": actor.pk,
        "widgets/widget": widget.pk,
        "widgets/category": category.pk,
        "widgets/stockmovement": StockMovement.objects.get(widget=stocked).pk,
        "widgets/apitoken": own_tokens["manager"].pk,
        "widgets/changelogentry": ChangeLogEntry.objects.first().pk,
        "webhooks": subscription.pk,
        "webhooks/webhooksubscription": subscription.pk,
        "webhooks/delivery": delivery.pk,
    }
    return {
        "clients": clients,
        "own_tokens": own_tokens,
        "objects": objects,
        "stocked": stocked.pk,
        "content_type": ContentType.objects.get_for_model(widget).pk,
        "secrets": ["SECRET-1", "Secret Widget", "Secret Category", "Secret Reservation"],
    }


def concrete_path(pattern: str, world: dict, role: str) -> str:
    """A real URL for a pattern: its parameters filled with objects that exist."""
    path = "/" + pattern.replace(".<format>/?", ".json").replace("<format>", ".json")
    resource = re.match(r"(?:api/|admin/)([a-z/]+?)/(?:<|$)", pattern)
    for name in re.findall(r"<(\w+)>", path):
        if name in ("pk", "object_id", "id"):
            kind = resource.group(1) if resource else None
            if kind == "auth/tokens":
                value = world["own_tokens"].get(role, world["own_tokens"]["manager"]).pk
            elif pattern.startswith(("api/widgets/<pk>/adjust", "api/widgets/<pk>/movements")):
                value = world["stocked"]
            elif kind == "r" or pattern.startswith("admin/r/"):
                value = world["objects"]["widgets"]
            else:
                assert kind in world["objects"], f"add a sample object for {pattern}"
                value = world["objects"][kind]
        elif name == "delivery_id":
            value = world["objects"]["webhooks/delivery"]
        elif name == "content_type_id":
            value = world["content_type"]
        elif name == "app_label":
            value = "widgets"
        elif name == "url":
            value = "no-such-page/"
        else:
            raise AssertionError(f"add a sample value for <{name}> in {pattern}")
        path = path.replace(f"<{name}>", str(value), 1)
    return path


def request_as(world, role, method, path):
    template = world["clients"][role]
    client = APIClient()  # a fresh client: a logout must not leak into the next request
    client._credentials = dict(template._credentials)
    client.cookies = SimpleCookie(template.cookies.output(header="", sep=";"))
    body = {} if method in ("POST", "PUT", "PATCH") else None
    with transaction.atomic():
        response = client.generic(method, path, data="{}" if body is not None else "", content_type="application/json")
        transaction.set_rollback(True)
    return response


def methods_for(pattern: str) -> list[str]:
    return API_METHODS if pattern.startswith("api/") else PAGE_METHODS


def actual_row(world, pattern, method):
    responses = [request_as(world, role, method, concrete_path(pattern, world, role)) for role in ROLES]
    return responses


# --- The tests --------------------------------------------------------------------------------------


def test_every_url_pattern_is_in_the_matrix():
    found = {base_pattern(p) for p in url_patterns()}

    missing = sorted(found - set(MATRIX))
    stale = sorted(set(MATRIX) - found)

    assert not missing, f"URL patterns without a row in MATRIX (add them): {missing}"
    assert not stale, f"MATRIX rows for URL patterns that no longer exist: {stale}"


def test_only_the_public_pages_answer_anonymous_clients():
    anonymous = ROLES.index("anonymous")
    answering = {
        pattern
        for pattern, methods in MATRIX.items()
        if any(200 <= row(statuses)[anonymous] < 300 for statuses in methods.values())
    }

    assert answering == PUBLIC


@pytest.mark.parametrize("pattern", url_patterns())
def test_status_for_every_method_and_role(world, pattern):
    expected = MATRIX[base_pattern(pattern)]
    assert set(expected) == set(methods_for(pattern)), f"{pattern}: rows for {methods_for(pattern)} expected"
    mismatches = []
    for method in methods_for(pattern):
        responses = actual_row(world, pattern, method)
        got = [r.status_code for r in responses]
        if got != row(expected[method]):
            mismatches.append(f"{method:7} expected {expected[method]}\n        got      {' '.join(map(str, got))}")
        for role, response in zip(ROLES, responses):
            if role in ("anonymous", "expired", "revoked"):
                body = b"" if getattr(response, "streaming", False) else response.content
                leaked = [s for s in world["secrets"] if s.encode() in body]
                assert not leaked, f"{method} {pattern} showed {leaked} to {role}"
            if role == "anonymous" and response.status_code == 302 and pattern.startswith("admin/"):
                assert response["Location"].startswith(("/admin/login/", "/admin/")), response["Location"]
    assert not mismatches, f"{pattern} (roles: {' '.join(ROLES)}):\n" + "\n".join(mismatches)
