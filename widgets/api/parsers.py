"""The JSON parser, bounded: a body over the size limit or nested too deeply is a 4xx, never a 500.

Django enforces DATA_UPLOAD_MAX_MEMORY_SIZE only on ``request.body`` and form data; DRF's
parsers read the raw stream, so the limit is applied here for JSON.
"""

import io

from django.conf import settings
from rest_framework.exceptions import ParseError

from .exceptions import RequestTooLarge
from .renderers import ORJSONParser


class JSONParser(ORJSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if limit is not None:
            request = (parser_context or {}).get("request")
            declared = request.META.get("CONTENT_LENGTH") if request is not None else None
            if declared and declared.isdigit() and int(declared) > limit:
                raise RequestTooLarge()
            body = stream.read(limit + 1)
            if len(body) > limit:
                raise RequestTooLarge()
            stream = io.BytesIO(body)
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
