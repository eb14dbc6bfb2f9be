"""503 JSON for a database that went away at a moment DRF's exception handler cannot see.

DRF's handler (``widgets.api.exceptions``) answers database errors raised inside a view.
A few are raised after it has run: the COMMIT of a request-wide transaction (as the
Idempotency-Key one), or re-entering autocommit after its rollback. Those reach Django as
plain exceptions and would be a 500; under /api/ this answers them as the handler would.
"""

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

from .exceptions import DatabaseUnavailable, logger

UNKNOWN_OUTCOME = (
    "The database became unavailable while the request was being finished, so it may or may not "
    "have been applied. Retry shortly, with the same Idempotency-Key if you sent one."
)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not (request.path.startswith("/api/") and isinstance(exception, (OperationalError, InterfaceError))):
            return None
        # Whether the COMMIT reached the server is unknown; a retry with the same
        # Idempotency-Key replays the answer if it did and applies the change if it did not.
        logger.warning("Database unavailable: %s", exception)
        response = JsonResponse(
            {"detail": UNKNOWN_OUTCOME, "code": DatabaseUnavailable.default_code},
            status=DatabaseUnavailable.status_code,
        )
        response["Retry-After"] = "2"
        return response
