"""Limit/offset pagination that rejects bad parameters instead of guessing."""
from rest_framework import pagination
from rest_framework.exceptions import ValidationError


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    """``?limit=&offset=``: default 50; a limit above 1000 is clamped to 1000.

    DRF silently falls back to the default on ``limit=abc`` or ``limit=-5``; here any
    value that is not a whole number in range is a 400 naming the parameter.
    """

    default_limit = 50
    max_limit = 1000
    max_digits = 18  # int() on a 10,000-digit string is needless work

    def get_schema_operation_parameters(self, view):
        # The bounds _parse enforces, so that clients (and fuzzers) see them in the schema.
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            minimum = 1 if parameter["name"] == self.limit_query_param else 0
            parameter["schema"].update(minimum=minimum, maximum=10**self.max_digits - 1)
        return parameters

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
