"""Renderers and parsers of the API.

- JSON in and out through orjson: the same bytes as DRF's JSON renderer and parser for
  everything this API sends and receives, several times faster. Whatever orjson cannot
  take as is (DRF's pretty-printing for the browsable API, an integer beyond 64 bits, a
  non-UTF-8 charset) goes to DRF's own implementation.
- CSV for the widget list: ``GET /api/widgets/?format=csv`` (or ``Accept: text/csv``).
  The renderer takes part in content negotiation like any other; the list action then
  streams the filtered, ordered queryset through ``render`` instead of paginating it.
"""
import io

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

from ..csv_io import csv_lines, export_rows

# Datetimes through DRF's encoder: the same format as the standard renderer.
OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_encoder = JSONEncoder()


class ORJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None):
        if data is None:
            return b""
        if self.get_indent(accepted_media_type, renderer_context or {}) is not None:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            rendered = orjson.dumps(data, default=_encoder.default, option=OPTIONS)
        except orjson.JSONEncodeError:
            return super().render(data, accepted_media_type, renderer_context)
        # As DRF does: keep the output a strict JavaScript subset.
        if b"\xe2\x80\xa8" in rendered or b"\xe2\x80\xa9" in rendered:
            rendered = rendered.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return rendered


class ORJSONParser(JSONParser):
    renderer_class = ORJSONRenderer

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", "utf-8") or "utf-8"
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            return super().parse(stream, media_type, parser_context)
        body = stream.read() if stream is not None else b""
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            # orjson is stricter than JSON itself (lone surrogates, numbers beyond 64 bits
            # or a double): let DRF's parser decide, so the field's own validation can name
            # the problem. Only a request that is already wrong pays for the second parse.
            return super().parse(io.BytesIO(body), media_type, parser_context)


class WidgetCSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        """``data`` is a widget queryset; returns an iterator of CSV lines for a
        ``StreamingHttpResponse`` (the list view never builds the file in memory)."""
        return csv_lines(export_rows(data))

