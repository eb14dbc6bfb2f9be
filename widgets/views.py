"""Plain Django views: health probes and the project's error pages.

Errors under ``/api/`` are JSON for API clients (anything but a browser asking for
HTML), so a client never has to parse an HTML error page.
"""

from http import HTTPStatus

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views import defaults
from django.views.decorators.cache import never_cache

from config.replicas import replica_health


@never_cache
def healthz(request):
    """Liveness: the process answers. Touches no database."""
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request):
    """Readiness: the database answers a query. Read replicas, when configured, are reported
    but never fail the instance: reads fall back to the primary without them."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        body, status = {"status": "ok", "database": "ok"}, 200
    except DatabaseError:
        body, status = {"status": "unavailable", "database": "unreachable"}, 503
    if len(settings.DATABASES) > 1:
        body["replicas"] = replica_health()
        if status == 200 and "unreachable" in body["replicas"].values():
            body["status"] = "degraded"
    return JsonResponse(body, status=status)


# Errors answered outside DRF, with DRF's codes for the same statuses.
ERRORS = {
    400: ("Bad request.", "bad_request"),
    403: ("Permission denied.", "permission_denied"),
    404: ("Not found.", "not_found"),
    405: ('Method "{method}" not allowed.', "method_not_allowed"),
    500: ("Internal server error. The error has been logged.", "server_error"),
}


def wants_json(request) -> bool:
    """Under /api/, any client that does not ask for HTML (a browser does) gets JSON."""
    if not request.path.startswith("/api/"):
        return False
    accept = request.headers.get("Accept", "")
    return "text/html" not in accept


def json_error(request, status: int) -> JsonResponse:
    """``{"detail", "code"}`` for an error status."""
    phrase = HTTPStatus(status).phrase
    detail, code = ERRORS.get(status, (f"{phrase}.", phrase.lower().replace(" ", "_").replace("-", "_")))
    return JsonResponse({"detail": detail.format(method=request.method), "code": code}, status=status)


def page_not_found(request, exception=None):
    if wants_json(request):
        return json_error(request, 404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if wants_json(request):
        return json_error(request, 500)
    return defaults.server_error(request)


def bad_request(request, exception=None):
    if wants_json(request):
        return json_error(request, 400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if wants_json(request):
        return json_error(request, 403)
    return defaults.permission_denied(request, exception)
