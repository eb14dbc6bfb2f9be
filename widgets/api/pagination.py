"""Limit/offset pagination that rejects bad parameters instead of guessing, with a
bounded ``count`` and a keyset mode for walking a whole table.

``count`` is exact up to ``API_EXACT_COUNT_LIMIT`` rows. On PostgreSQL a larger
result is not counted on every request: ``count`` is then the planner's estimate
(from the table statistics) and the response carries ``"count_is_estimate": true``
(absent when the count is exact). SQLite always counts.

``?start=<id>`` is the keyset mode: the objects with ``id >= start`` in id order, no
count, and a ``next`` link that starts after the last object. Its cost does not grow
with the depth into the table, unlike a large ``offset``.
"""

from urllib import parse

from django.conf import settings
from rest_framework import pagination
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.settings import api_settings

from ..models import bounded_count

ORDERING_PARAM = "ordering"


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """``?limit=&offset=``: default ``REST_FRAMEWORK["PAGE_SIZE"]`` (50); a limit above
    1000 is clamped to 1000.

    DRF silently falls back to the default on ``limit=abc`` or ``limit=-5``; here any
    value that is not a whole number in range is a 400 naming the parameter.
    """

    max_limit = 1000
    max_digits = 18  # int() on a 10,000-digit string is needless work
    start_query_param = "start"
    count_is_estimate = False
    start = None

    @property
    def default_limit(self):
        # Read per request, like the rest of api_settings (DRF's class reads it once, at import).
        return api_settings.PAGE_SIZE

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        raw_start = request.query_params.get(self.start_query_param)
        if raw_start is not None:
            return self._paginate_by_key(queryset, request, raw_start)
        self.count = self.get_count(queryset)
        self.offset = self.get_offset(request)
        if self.count > self.limit:
            self.display_page_controls = True
        if not self.count_is_estimate and (self.count == 0 or self.offset > self.count):
            return []
        page = self._rows(queryset, "compiled_page", offset=self.offset, limit=self.limit)
        if page is None:
            page = list(queryset[self.offset : self.offset + self.limit])
        if self.count_is_estimate:
            # An estimate may be short of the truth: a full page means there may be more.
            self.count = max(self.count, self.offset + len(page) + (1 if len(page) == self.limit else 0))
        return page

    def _paginate_by_key(self, queryset, request, raw_start):
        self.start = self._parse(self.start_query_param, raw_start, minimum=0)
        for conflicting in (self.offset_query_param, ORDERING_PARAM):
            if request.query_params.get(conflicting):
                raise ValidationError(
                    {conflicting: [f"Cannot be combined with '{self.start_query_param}' (keyset mode is in id order)."]}
                )
        rows = self._rows(queryset, "compiled_keyset", start=self.start, limit=self.limit + 1)
        if rows is None:
            rows = list(queryset.filter(pk__gte=self.start).order_by("pk")[: self.limit + 1])
        self.next_start = rows[self.limit].pk if len(rows) > self.limit else None
        return rows[: self.limit]

    @staticmethod
    def _rows(queryset, method: str, **page):
        # A queryset may read its plain pages from SQL compiled once per process
        # (WidgetQuerySet.compiled_page, compiled_keyset): the same rows as slicing it, or
        # None when it cannot (it is filtered or reordered).
        compiled = getattr(queryset, method, None)
        return None if compiled is None else compiled(**page)

    def get_count(self, queryset):
        count, self.count_is_estimate = bounded_count(queryset, settings.API_EXACT_COUNT_LIMIT)
        return count

    def get_paginated_response(self, data):
        if self.start is not None:
            return Response({"next": self.get_next_link(), "previous": None, "results": data})
        body = {"count": self.count}
        if self.count_is_estimate:
            # Only then: an exact count keeps the envelope clients already know.
            body["count_is_estimate"] = True
        return Response({**body, "next": self.get_next_link(), "previous": self.get_previous_link(), "results": data})

    def get_next_link(self):
        if self.start is not None:
            if self.next_start is None:
                return None
            return self._link({self.limit_query_param: self.limit, self.start_query_param: self.next_start})
        if self.offset + self.limit >= self.count:
            return None
        return self._link({self.limit_query_param: self.limit, self.offset_query_param: self.offset + self.limit})

    def get_previous_link(self):
        if self.offset <= 0:
            return None
        offset = self.offset - self.limit
        return self._link({self.limit_query_param: self.limit, self.offset_query_param: offset if offset > 0 else None})

    def _link(self, changes):
        """This request's absolute URL with ``changes`` made to its query (None removes a
        parameter): what DRF's ``replace_query_param`` and ``remove_query_param`` give applied
        one after the other, with the URL split and its query parsed once per request
        instead of once per change (a twelfth of serving a page)."""
        parsed = self.__dict__.get("_parsed_url")
        if parsed is None:
            scheme, netloc, path, query, fragment = parse.urlsplit(self.request.build_absolute_uri())
            parsed = self._parsed_url = (scheme, netloc, path, parse.parse_qs(query, keep_blank_values=True), fragment)
        scheme, netloc, path, query_dict, fragment = parsed
        query_dict = {**query_dict}
        for key, value in changes.items():
            if value is None:
                query_dict.pop(key, None)
            else:
                query_dict[key] = [str(value)]
        query = parse.urlencode(sorted(query_dict.items()), doseq=True)
        return parse.urlunsplit((scheme, netloc, path, query, fragment))

    def get_paginated_response_schema(self, schema):
        response = super().get_paginated_response_schema(schema)
        response["required"] = ["results"]
        response["properties"]["count"]["description"] = (
            "Number of results: exact up to a server-set limit (10,000 by default), above it "
            "an estimate (see count_is_estimate). Absent in keyset mode (?start=)."
        )
        response["properties"] = {
            "count": response["properties"].pop("count"),
            "count_is_estimate": {
                "type": "boolean",
                "description": "Present, and true, only when count is PostgreSQL's estimate rather "
                "than an exact count (more results than the server's exact-count limit).",
                "enum": [True],
            },
            **response["properties"],
        }
        return response

    def get_schema_operation_parameters(self, view):
        # The bounds _parse enforces, so that clients (and fuzzers) see them in the schema.
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            minimum = 1 if parameter["name"] == self.limit_query_param else 0
            parameter["schema"].update(minimum=minimum, maximum=10**self.max_digits - 1)
        return [
            *parameters,
            {
                "name": self.start_query_param,
                "required": False,
                "in": "query",
                "description": "Keyset mode: results with id >= start, in id order, without a count; "
                "follow `next` to walk the whole list at a constant cost per page. "
                "Cannot be combined with offset or ordering.",
                "schema": {"type": "integer", "minimum": 0, "maximum": 10**self.max_digits - 1},
            },
        ]

    def check_parameters(self, request) -> None:
        """Validates the paging parameters of a request that is not paged (the CSV export):
        a wrong value is still a 400 naming it, never silently ignored."""
        self.get_limit(request)
        self.get_offset(request)
        raw_start = request.query_params.get(self.start_query_param)
        if raw_start:
            self._parse(self.start_query_param, raw_start, minimum=0)

    def get_limit(self, request):
        raw = request.query_params.get(self.limit_query_param)
        if raw is None or raw == "":
            return self.default_limit
        return min(self._parse(self.limit_query_param, raw, minimum=1), self.max_limit)

    def get_offset(self, request):
        raw = request.query_params.get(self.offset_query_param)
        if raw is None or raw == "":
            return 0
        return self._parse(self.offset_query_param, raw, minimum=0)

    def _parse(self, name: str, raw: str, *, minimum: int) -> int:
        if len(raw) > self.max_digits or not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
            raise ValidationError({name: [f"Must be a whole number of at least {minimum}."]})
        return int(raw)
