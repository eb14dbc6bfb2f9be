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
import json

import orjson
from django.core.exceptions import FieldDoesNotExist
from rest_framework import renderers, serializers
from rest_framework.fields import empty
from rest_framework.parsers import JSONParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import override_method
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


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """DRF's browsable API, with forms that stay usable from one request to the next.

    - After a successful POST the page offers an empty form for the next one. DRF would
      build the form from the response's serializer: for ``adjust/`` that is the movement
      just written, whose fields are all read-only, so the form came back without fields.
    - The raw data form's prefill is a body the server accepts once the required values
      are typed in: every writable field (write-only ones such as ``password`` included)
      with its default, the model's default, or null/"" where the field takes it; a
      required field is left blank for the user. DRF's own prefill put ``null`` into fields
      that refuse it (``expires_in_days``, ``price``) and ``false`` into ``is_active``.
    """

    def get_rendered_html_form(self, data, view, method, request):
        if method == request.method == "POST" and self._succeeded():
            data = None  # no serializer to reuse: a fresh form
        return super().get_rendered_html_form(data, view, method, request)

    def get_raw_data_form(self, data, view, method, request):
        if method == request.method == "POST" and self._succeeded():
            data = None
        form = super().get_raw_data_form(data, view, method, request)
        if form and method == "POST" and hasattr(view, "get_serializer"):
            with override_method(view, request, method):
                serializer = view.get_serializer()
            if isinstance(serializer, serializers.Serializer):
                form.fields["_content"].initial = json.dumps(
                    _prefill(serializer), indent=4, ensure_ascii=False, cls=JSONEncoder
                )
        return form

    def _succeeded(self) -> bool:
        response = (self.renderer_context or {}).get("response")
        return response is not None and response.status_code < 400


def _prefill(serializer: serializers.Serializer) -> dict:
    model = getattr(getattr(serializer, "Meta", None), "model", None)
    body = {}
    for name, field in serializer.fields.items():
        if field.read_only or isinstance(field, serializers.HiddenField):
            continue
        model_field = _model_field(model, field.source)
        if isinstance(field, serializers.ListSerializer) and isinstance(field.child, serializers.Serializer):
            body[name] = [_prefill(field.child)]
        elif field.default is not empty:
            default = field.default() if callable(field.default) else field.default
            body[name] = field.to_representation(default) if default not in (None, "") else default
        elif model_field is not None and model_field.has_default():
            default = model_field.get_default()
            body[name] = field.to_representation(default) if default not in (None, "") else default
        elif field.required:
            body[name] = "" if isinstance(field, serializers.CharField) else None
        elif field.allow_null:
            body[name] = None
        elif getattr(field, "allow_blank", False):
            body[name] = ""
    return body


def _model_field(model, source):
    if model is None or not source or "." in source:
        return None
    try:
        return model._meta.get_field(source)
    except FieldDoesNotExist:
        return None
