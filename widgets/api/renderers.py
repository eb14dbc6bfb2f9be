"""CSV for the widget list: ``GET /api/widgets/?format=csv`` (or ``Accept: text/csv``).

The renderer takes part in content negotiation like any other; the list action then
streams the filtered, ordered queryset through ``render`` instead of paginating it.
"""
from rest_framework.renderers import BaseRenderer

from ..csv_io import csv_lines, export_rows


class WidgetCSVRenderer(BaseRenderer):
    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        """``data`` is a widget queryset; returns an iterator of CSV lines for a
        ``StreamingHttpResponse`` (the list view never builds the file in memory)."""
        return csv_lines(export_rows(data))

