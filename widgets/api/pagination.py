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

    @staticmethod
    def _parse(name: str, raw: str, *, minimum: int) -> int:
        # Bounded length first: int() on a 10,000-digit string is needless work.
        if len(raw) > 18 or not (raw.isascii() and raw.isdigit()) or int(raw) < minimum:
            raise ValidationError({name: [f"Must be a whole number of at least {minimum}."]})
        return int(raw)
