"""Conditional requests (RFC 9110 section 13) on objects with a ``version`` column.

The ETag is the version, a strong validator: every write bumps it, so two representations
with the same tag are byte-for-byte the same. A widget's representation also shows the
units reserved, which reservations change (and their expiry, with no write at all)
without touching the widget's row: while a widget has units reserved its tag is
``"<version>+<reserved>"``, so a cached copy is never taken for current. ``If-Match``
guards the writes to the object's own fields and compares the version part. ``If-Match`` is checked twice: early against
the object just read (so a stale request is refused before validation), and decisively by
the service under the row lock that guards the write (``expected_version=``), which a
concurrent writer cannot slip past.
"""

import re

from django.conf import settings
from django.utils.http import parse_etags
from rest_framework import exceptions, status
from rest_framework.response import Response

from ..services import VersionMismatch

VERSION_TAG = re.compile(r'^"(\d{1,10})(?:\+\d{1,10})?"$')


def etag_for(version: int, reserved: int = 0) -> str:
    return f'"{version}+{reserved}"' if reserved else f'"{version}"'


class PreconditionRequired(exceptions.APIException):
    status_code = 428
    default_detail = "This server requires If-Match on writes: GET the object and send its ETag."
    default_code = "precondition_required"


def if_match_versions(request) -> set[int] | None:
    """The versions an ``If-Match`` header accepts; ``None`` when any version will do.

    Strong comparison: weak tags (``W/"3"``) and tags that are not ours match nothing,
    so a header made only of them leaves an empty set, which no version satisfies.
    """
    header = request.headers.get("If-Match")
    if header is None:
        return None
    tags = parse_etags(header)
    if tags == ["*"]:
        return None
    return {int(m.group(1)) for m in map(VERSION_TAG.match, tags) if m}


def none_match(request, etag: str) -> bool:
    """True when ``If-None-Match`` names ``etag`` (weak comparison) or is ``*``."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    tags = parse_etags(header)
    return tags == ["*"] or etag in (tag.removeprefix("W/") for tag in tags)


class ConditionalMixin:
    """ETag on every read and write of one object; If-None-Match -> 304; If-Match -> 412.

    The viewset's ``perform_update`` / ``perform_destroy`` pass ``self.expected_version()``
    to the service, which compares it under the row lock.
    """

    def expected_version(self) -> set[int] | None:
        return if_match_versions(self.request)

    def etag(self, instance) -> str:
        return etag_for(instance.version)

    def check_preconditions(self, instance) -> None:
        if "If-Match" not in self.request.headers and settings.REQUIRE_IF_MATCH:
            raise PreconditionRequired()
        expected = self.expected_version()
        if expected is not None and instance.version not in expected:
            raise VersionMismatch(instance.version)

    def retrieve(self, request, *args, **kwargs):
        instance = self.get_object()
        etag = self.etag(instance)
        if none_match(request, etag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
        return Response(self.get_serializer(instance).data, headers={"ETag": etag})

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        headers = {**self.get_success_headers(serializer.data), "ETag": self.etag(serializer.instance)}
        return Response(serializer.data, status=status.HTTP_201_CREATED, headers=headers)

    def update(self, request, *args, **kwargs):
        partial = kwargs.pop("partial", False)
        instance = self.get_object()
        self.check_preconditions(instance)
        serializer = self.get_serializer(instance, data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        self.perform_update(serializer)
        return Response(serializer.data, headers={"ETag": self.etag(serializer.instance)})

    def destroy(self, request, *args, **kwargs):
        instance = self.get_object()
        self.check_preconditions(instance)
        self.perform_destroy(instance)
        return Response(status=status.HTTP_204_NO_CONTENT)
