"""Project-wide middleware: the per-request log line, JSON errors for API clients (also for
over-long URLs and headers) and the load balancer's health check."""

import logging
import re
import time
import uuid

from django.conf import settings
from django.contrib.messages.middleware import MessageMiddleware
from django.contrib.messages.storage import default_storage
from django.http import JsonResponse
from django.utils.functional import SimpleLazyObject, empty

from config.logs import current_request_id
from widgets.views import healthz, json_error, wants_json

access_log = logging.getLogger("access")

# An incoming X-Request-ID is reused only when it is short and plain, so that a client
# cannot write arbitrary text into our logs; otherwise a fresh id is generated.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestLogMiddleware:
    """Writes one access line per request and echoes the request id in ``X-Request-ID``.

    The line has the method, the path (never the query string, which may carry secrets),
    the status, the duration in milliseconds, the authenticated user's id and the request id.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if REQUEST_ID.match(incoming) else uuid.uuid4().hex
        reset_token = current_request_id.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            access_log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "user_id": authenticated_user_id(request),
                },
            )
            return response
        finally:
            current_request_id.reset(reset_token)


def authenticated_user_id(request):
    user = getattr(request, "user", None)
    # A user nobody looked at is not loaded just for the log line (that would cost a query).
    if user is None or getattr(user, "_wrapped", None) is empty:
        return None
    return user.pk if user.is_authenticated else None


class HealthCheckMiddleware:
    """Answers ``GET /healthz`` before ``ALLOWED_HOSTS`` is consulted.

    The load balancer probes each instance at its private IP (``Host: 10.0.3.17``), which
    is unknown before the instance boots and must not be an allowed host: allowing it, or
    ``*``, would let any Host header through for every other URL. So this one path, which
    reveals nothing and touches no database, is answered here, ahead of CommonMiddleware
    (where the Host is validated); every other request is validated as usual. It sits after
    SecurityMiddleware, whose HTTPS redirect already exempts the health checks.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info == "/healthz" and request.method in ("GET", "HEAD"):
            return healthz(request)
        return self.get_response(request)


class ApiJsonErrorsMiddleware:
    """Every error under ``/api/`` is JSON for an API client, whatever DEBUG says.

    The project's error handlers (config/urls.py) answer JSON only with DEBUG off: with DEBUG
    on, Django answers an unknown URL or an uncaught exception with its HTML debug page (which
    lists every URL pattern). Views that are HTML only (the docs pages) answer an API client
    with a text/html 406, and a view outside DRF a method it does not offer with an empty 405.
    So an error response in HTML or plain text is replaced here by ``{"detail", "code"}`` with
    the same status and headers, unless the client asked for HTML (a browser, the browsable
    API). Other formats (a CSV export's error) were negotiated with the client and are left
    alone. The exception itself was already logged, with its traceback, by Django's handler.
    Sits near the top, so that it sees the errors of every middleware below it too.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code >= 400
            and response.get("Content-Type", "").startswith(("text/html", "text/plain"))
            and wants_json(request)
        ):
            replacement = json_error(request, response.status_code)
            for header in ("Allow", "Retry-After", "WWW-Authenticate", "Vary"):
                if header in response:
                    replacement[header] = response[header]
            return replacement
        return response


class RequestSizeMiddleware:
    """Refuses an over-long URL (414) or header field (431) with a small JSON body.

    In production nginx (8 KB request line and header buffers) and gunicorn (8190 bytes,
    its own errors written as JSON by config/gunicorn_errors.py) refuse larger ones before
    they get here; this answers the same for whatever server the app runs behind, so no
    client ever gets an HTML error for sending too much. Bodies are bounded by
    DATA_UPLOAD_MAX_MEMORY_SIZE (a 413, widgets.api.exceptions).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        limit = settings.MAX_URL_BYTES
        if len(meta.get("PATH_INFO", "")) + len(meta.get("QUERY_STRING", "")) > limit:
            return size_error(414, f"The URL is longer than {limit} bytes.", "uri_too_long")
        limit = settings.MAX_HEADER_BYTES
        for name, value in meta.items():
            if name.startswith("HTTP_") and len(value) > limit:
                header = name[5:].replace("_", "-").title()
                return size_error(431, f"The {header} header is longer than {limit} bytes.", "header_too_large")
        return self.get_response(request)


def size_error(status: int, detail: str, code: str) -> JsonResponse:
    response = JsonResponse({"detail": detail, "code": code}, status=status)
    # Answered before CommonMiddleware would set it: without it gunicorn sends the body chunked.
    response["Content-Length"] = str(len(response.content))
    return response


class LazyMessageMiddleware(MessageMiddleware):
    """``django.contrib.messages``' middleware, making a request's message storage only when
    something adds or reads a message (the admin), not for every request.

    Making it costs a storage per backend (cookie and session) and a cookie signer; an API
    request never uses it. A storage nobody used has nothing to store in the response: the
    plain middleware's ``update()`` would return without touching it.
    """

    def process_request(self, request):
        request._messages = SimpleLazyObject(lambda: default_storage(request))

    def process_response(self, request, response):
        messages = getattr(request, "_messages", None)
        if isinstance(messages, SimpleLazyObject) and messages._wrapped is empty:
            return response
        return super().process_response(request, response)
