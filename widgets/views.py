"""Plain Django views: health probes and the project's error pages.

Errors under ``/api/`` are JSON for API clients (anything but a browser asking for
HTML), so a client never has to parse an HTML error page.
"""
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views import defaults
from django.views.decorators.cache import never_cache


@never_cache
def healthz(request):
    """Liveness: the process answers. Touches no database."""
    return JsonResponse({"status": "ok"})


@never_cache
def readyz(request):
    """Readiness: the database answers a query."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError:
        return JsonResponse({"status": "unavailable", "database": "unreachable"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


def wants_json(request) -> bool:
    if not request.path.startswith("/api/"):
        return False
    accept = request.headers.get("Accept", "")
    return "text/html" not in accept


def page_not_found(request, exception=None):
    if wants_json(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if wants_json(request):
        return JsonResponse(
            {"detail": "Internal server error. The error has been logged.", "code": "server_error"},
            status=500,
        )
    return defaults.server_error(request)


def bad_request(request, exception=None):
    if wants_json(request):
        return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception=None):
    if wants_json(request):
        return JsonResponse({"detail": "Permission denied.", "code": "permission_denied"}, status=403)
    return defaults.permission_denied(request, exception)
