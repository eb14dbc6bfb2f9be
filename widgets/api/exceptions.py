"""One shape for every API error: ``{"detail": ..., "code": ...}`` plus context.

Validation errors keep DRF's ``{field: [messages]}`` shape, which names the field.
"""

import logging

from django.conf import settings
from django.core.exceptions import ObjectDoesNotExist, RequestDataTooBig, TooManyFieldsSent
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import InterfaceError, OperationalError
from django.db.models import ProtectedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..services import BatchItemError, InvalidMovement, InventoryError, VersionMismatch
from .conditional import etag_for


class ItemError(Exception):
    """Item ``index`` (0-based) of a batch request is at fault; answered as
    ``{"detail", "code", "index", ...}`` with ``status``."""

    def __init__(self, *, index: int, detail: str, code: str, status: int = 400, **extra):
        super().__init__(detail)
        self.index, self.detail, self.code, self.status, self.extra = index, detail, code, status, extra


logger = logging.getLogger(__name__)


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self):
        super().__init__(f"The request body is larger than the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")


class DatabaseUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_code = "database_unavailable"
    default_detail = "The database is unavailable; retry shortly. Nothing was changed."


def exception_handler(exc, context):
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database went away (or refused, or timed out). The transaction was rolled back,
        # so the client can retry; Django reconnects by itself on a later request.
        logger.warning("Database unavailable: %s", exc)
        exc = DatabaseUnavailable()
    elif isinstance(exc, RequestDataTooBig):  # form bodies, checked by Django itself
        exc = RequestTooLarge()
    elif isinstance(exc, TooManyFieldsSent):
        exc = exceptions.ParseError(
            f"Too many query or form parameters (at most {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS})."
        )
    if isinstance(exc, InvalidMovement):  # the service's own check: a 400 naming the field
        exc = exceptions.ValidationError({exc.field: [f"{exc.detail}."]}, code=exc.code)
    if isinstance(exc, BatchItemError):  # the service refused an item: nothing was applied
        error = exc.error
        if isinstance(error, InventoryError):
            exc = ItemError(index=exc.index, detail=error.detail, code=error.code, status=409, **error.extra)
        else:
            extra = {"field": error.field} if getattr(error, "field", None) else {}
            exc = ItemError(index=exc.index, detail=str(error), code=getattr(error, "code", "invalid"), **extra)
    if isinstance(exc, ItemError):
        body = {"detail": f"Item {exc.index}: {exc.detail}", "code": exc.code, "index": exc.index, **exc.extra}
        return Response(body, status=exc.status)
    if isinstance(exc, VersionMismatch):
        return Response(
            {
                "detail": "The object has changed since you read it (If-Match failed); nothing was changed.",
                "code": "precondition_failed",
            },
            status=status.HTTP_412_PRECONDITION_FAILED,
            headers={"ETag": etag_for(exc.current_version)},
        )
    if isinstance(exc, InventoryError):
        return Response({"detail": exc.detail, "code": exc.code, **exc.extra}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ProtectedError):
        return Response(
            {"detail": "This object is still referenced and cannot be deleted.", "code": "protected"},
            status=status.HTTP_409_CONFLICT,
        )
    # DRF's handler turns Django's Http404 and PermissionDenied into its own exceptions;
    # a row that vanished under a service (deleted concurrently) is a 404 too.
    if isinstance(exc, (Http404, ObjectDoesNotExist)):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and "detail" in response.data:
        codes = exc.get_codes()
        if isinstance(codes, str):
            response.data["code"] = codes
        elif isinstance(codes, dict) and isinstance(codes.get("detail"), str):
            response.data["code"] = codes["detail"]
    if isinstance(exc, DatabaseUnavailable):
        response["Retry-After"] = "2"
    return response
