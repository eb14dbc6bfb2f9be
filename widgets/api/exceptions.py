"""One shape for every API error: ``{"detail": ..., "code": ...}`` plus context.

Validation errors keep DRF's ``{field: [messages]}`` shape, which names the field.
"""
from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db.models import ProtectedError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..services import InventoryError


def exception_handler(exc, context):
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
    return response
