"""Staff screens. Every stock change made here goes through ``widgets.services``.

The input rules are the model fields' (``widgets.validators``), which the ModelForms run in
``full_clean()``; text is kept as typed (not stripped), as the API keeps it.
"""

import base64
import gzip
import io
import secrets
from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import models, transaction
from django.forms.models import BaseInlineFormSet
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateformat import format as format_date
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import Truncator

from . import csv_io, services
from .charts import line_chart
from .models import (
    ApiToken,
    Category,
    ChangeLogEntry,
    Reservation,
    ReservationItem,
    StockMovement,
    Widget,
    bounded_count,
)
from .validators import one_line

INLINE_MOVEMENTS = 20
DASHBOARD_DAYS = 30
DASHBOARD_LOW_STOCK = 10  # the rest are one click away, on the filtered change list
HISTORY_POINTS = 100
IMPORT_ERRORS_SHOWN = 200


class BoundedCountPaginator(Paginator):
    """Counts as the API does: exact up to API_EXACT_COUNT_LIMIT, then PostgreSQL's
    estimate, so a changelist page never counts a million rows."""

    @cached_property
    def count(self):
        return bounded_count(self.object_list, settings.API_EXACT_COUNT_LIMIT)[0]


class LowStockFilter(admin.SimpleListFilter):
    title = "stock level"
    parameter_name = "low_stock"

    def lookups(self, request, model_admin):
        return [("yes", "Low stock (available at or below reorder level)"), ("no", "Above reorder level")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.low_stock()
        if self.value() == "no":
            return queryset.not_low_stock()
        return queryset


class RecentMovementsFormSet(BaseInlineFormSet):
    # A widget may have a long history: show the newest rows and link to the rest.
    # The same sliced queryset each time, so the page loads the rows once, not once per form.
    def get_queryset(self):
        # Kept, so the slice is read once: a fresh slice per call re-queried for every form.
        if not hasattr(self, "_recent"):
            self._recent = super().get_queryset()[:INLINE_MOVEMENTS]
        return self._recent


class StockMovementInline(admin.TabularInline):
    model = StockMovement
    formset = RecentMovementsFormSet
    fields = ["created_at", "delta", "reason", "note", "stock_after", "created_by"]
    readonly_fields = fields
    ordering = ["-id"]
    extra = 0
    can_delete = False
    show_change_link = False
    verbose_name_plural = f"Recent stock movements (newest {INLINE_MOVEMENTS})"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("created_by")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AdjustStockForm(forms.Form):
    delta = forms.IntegerField(
        min_value=-services.MAX_STOCK,
        max_value=services.MAX_STOCK,
        help_text="Units to add (positive) or remove (negative).",
    )
    reason = forms.ChoiceField(
        choices=[c for c in StockMovement.Reason.choices if c[0] != StockMovement.Reason.INITIAL]
    )
    note = forms.CharField(max_length=255, required=False, strip=False, validators=[one_line])

    def clean_delta(self):
        delta = self.cleaned_data["delta"]
        if delta == 0:
            raise forms.ValidationError("The change must not be zero.")
        return delta

    def clean(self):
        cleaned = super().clean()
        if "delta" in cleaned and "reason" in cleaned:
            # The service's rule (the sign each reason allows), shown on the field at fault.
            try:
                services.check_movement(delta=cleaned["delta"], reason=cleaned["reason"])
            except services.InvalidMovement as exc:
                self.add_error(exc.field, f"{exc.detail[0].upper()}{exc.detail[1:]}.")
        return cleaned


# After a dry run the checked file waits in the session (the database: every instance sees
# it) under a random token, so that applying it needs no second upload.
PENDING_IMPORT = "widgets_pending_import"


class ImportWidgetsForm(forms.Form):
    file = forms.FileField(required=False, help_text="UTF-8 CSV with a header row: " + ", ".join(csv_io.COLUMNS) + ".")
    pending = forms.CharField(required=False, widget=forms.HiddenInput)
    dry_run = forms.BooleanField(
        required=False,
        initial=True,
        label="Dry run",
        help_text="Check the file and show what would change; write nothing.",
    )
    stock_corrections = forms.BooleanField(
        required=False,
        label="Apply stock from a file without versions",
        help_text="Rows without a version may set the stock of existing widgets (as corrections). "
        "Leave off unless the file is newer than every change to that stock.",
    )

    def __init__(self, *args, session, **kwargs):
        super().__init__(*args, **kwargs)
        self.session = session

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("file"):
            cleaned["content"] = cleaned["file"].read()
            cleaned["filename"] = cleaned["file"].name
        else:
            stored = self.session.get(PENDING_IMPORT) or {}
            token = cleaned.get("pending")
            if not token or not secrets.compare_digest(str(stored.get("token", "")), token):
                raise forms.ValidationError({"file": "Choose a file to import."})
            cleaned["content"] = gzip.decompress(base64.b64decode(stored["data"]))
            cleaned["filename"] = stored["name"]
        return cleaned

    def keep(self) -> str:
        """Keep the checked file for applying it later; returns its token."""
        token = secrets.token_urlsafe(16)
        data = base64.b64encode(gzip.compress(self.cleaned_data["content"])).decode()
        self.session[PENDING_IMPORT] = {"token": token, "name": self.cleaned_data["filename"], "data": data}
        return token

    def forget(self) -> None:
        self.session.pop(PENDING_IMPORT, None)


class VerbatimTextMixin:
    """Text fields keep surrounding whitespace, as the API does: the same input is the same
    value at every door (Django's form fields strip it by default)."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, (models.CharField, models.TextField)) and not db_field.choices:
            kwargs.setdefault("strip", False)
        return super().formfield_for_dbfield(db_field, request, **kwargs)


def csv_download(queryset, filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(
        csv_io.csv_lines(csv_io.export_rows(queryset)), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def short_datetime(value) -> str:
    """``2026-12-02 13:55`` in the current time zone: half the width of Django's default."""
    return format_date(timezone.localtime(value), "Y-m-d H:i") if value else "-"


# The changelists need the width the navigation sidebar takes (the index and the breadcrumbs
# lead everywhere it does).
admin.site.enable_nav_sidebar = False


@admin.register(Widget)
class WidgetAdmin(VerbatimTextMixin, admin.ModelAdmin):
    # Fits a 1366 px screen next to the filters (tests/browser/test_admin_widths.py):
    # short headers, compact dates, SKUs kept on one line (staff.css). What is reserved is
    # on the widget's page; the list shows what is left to sell.
    list_display = [
        "sku",
        "name",
        "category",
        "stock",
        "available",
        "reorder_at",
        "is_low_stock",
        "price",
        "active",
        "updated",
    ]
    list_filter = ["category", "is_active", LowStockFilter]
    list_select_related = ["category"]
    search_fields = ["sku", "name"]
    readonly_fields = ["stock", "reserved", "available", "created_at", "updated_at", "movement_history_link"]
    fields = [
        "sku",
        "name",
        "description",
        "category",
        "price",
        "reorder_level",
        "is_active",
        "stock",
        "reserved",
        "available",
        "movement_history_link",
        "created_at",
        "updated_at",
    ]
    inlines = [StockMovementInline]
    show_full_result_count = False
    paginator = BoundedCountPaginator
    change_form_template = "admin/widgets/widget/change_form.html"
    delete_confirmation_template = "admin/widgets/widget/delete_confirmation.html"
    change_list_template = "admin/widgets/widget/change_list.html"
    actions = ["export_csv"]

    class Media:
        css = {"all": ["widgets/staff.css"]}

    def get_queryset(self, request):
        # Counted at this request's time: expired reservations hold nothing.
        return super().get_queryset(request).with_availability()

    @admin.display(boolean=True, description="Low stock", ordering="available")
    def is_low_stock(self, obj):
        return obj.low_stock

    @admin.display(description="Reserved", ordering="reserved")
    def reserved(self, obj):
        if obj.pk is None:
            return "-"
        url = reverse("admin:widgets_reservation_changelist") + f"?status=active&widget={obj.pk}"
        return format_html('{} <a href="{}">(reservations)</a>', obj.reserved, url) if obj.reserved else 0

    @admin.display(description="Available", ordering="available")
    def available(self, obj):
        return "-" if obj.pk is None else obj.available

    @admin.display(description="Reorder at", ordering="reorder_level")
    def reorder_at(self, obj):
        return obj.reorder_level

    @admin.display(boolean=True, description="Active", ordering="is_active")
    def active(self, obj):
        return obj.is_active

    @admin.display(description="Updated at", ordering="updated_at")
    def updated(self, obj):
        return short_datetime(obj.updated_at)

    @admin.display(description="History")
    def movement_history_link(self, obj):
        if obj.pk is None:
            return "-"
        url = reverse("admin:widgets_stockmovement_changelist") + f"?widget__id__exact={obj.pk}"
        return format_html('<a href="{}">All stock movements of this widget</a>', url)

    def get_urls(self):
        custom = [
            path(
                "<int:object_id>/adjust/",
                self.admin_site.admin_view(self.adjust_view),
                name="widgets_widget_adjust",
            ),
            path("dashboard/", self.admin_site.admin_view(self.dashboard_view), name="widgets_dashboard"),
            path("import/", self.admin_site.admin_view(self.import_view), name="widgets_widget_import"),
        ]
        return custom + super().get_urls()

    @admin.action(description="Export selected widgets as CSV", permissions=["view"])
    def export_csv(self, request, queryset):
        # "Select all" on a filtered list selects the whole filtered set, not only the page.
        return csv_download(queryset.order_by("id"), "widgets.csv")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = extra_context or {}
        if object_id and str(object_id).isdigit():
            history = StockMovement.objects.stock_history(widget_id=int(object_id), limit=HISTORY_POINTS)
            if history:
                extra_context["stock_chart"] = line_chart(
                    title="Stock level",
                    description=f"Stock after each of the last {len(history)} movements, oldest first.",
                    labels=[f"{timezone.localtime(when):%b %d %H:%M}" for when, _ in history],
                    series={"Stock": ("stock", [stock for _, stock in history])},
                    x_tick_every=max(1, len(history) // 3),
                )
        return super().change_view(request, object_id, form_url, extra_context)

    def dashboard_view(self, request):
        """Stock at a glance: totals, what needs reordering, and 30 days of flow."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        today = timezone.localdate()
        days = [today - timedelta(days=n) for n in range(DASHBOARD_DAYS - 1, -1, -1)]
        flow = {row["day"]: row for row in StockMovement.objects.daily_flow(days=DASHBOARD_DAYS, today=today)}
        chart = line_chart(
            title=f"Units received and sold per day, last {DASHBOARD_DAYS} days",
            description="Two lines: units received (solid) and units sold (dashed) per day.",
            labels=[f"{day:%b %d}" for day in days],
            series={
                "Received": ("received", [flow[d]["received"] if d in flow else 0 for d in days]),
                "Sold": ("sold", [flow[d]["sold"] if d in flow else 0 for d in days]),
            },
            x_tick_every=7,
        )
        changelist = reverse("admin:widgets_widget_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Stock dashboard",
            "opts": self.model._meta,
            "summary": Widget.objects.stock_summary(),
            "low_stock": Widget.objects.most_urgent_low_stock(DASHBOARD_LOW_STOCK),
            "low_stock_url": f"{changelist}?low_stock=yes&is_active__exact=1",
            "flow_chart": chart,
        }
        return TemplateResponse(request, "admin/widgets/dashboard.html", context)

    def import_view(self, request):
        """Upload a CSV: every row is checked first, then all applied or none."""
        if not all(
            request.user.has_perm(p)
            for p in ("widgets.add_widget", "widgets.change_widget", "widgets.add_stockmovement")
        ):
            raise PermissionDenied
        form = ImportWidgetsForm(request.POST or None, request.FILES or None, session=request.session)
        errors, summary, pending = [], None, None
        if request.method == "POST" and form.is_valid():
            try:
                text = form.cleaned_data["content"].decode("utf-8-sig")
            except UnicodeDecodeError:
                form.add_error("file", "The file is not UTF-8 text.")
            else:
                parsed = csv_io.read_widget_rows(io.StringIO(text, newline=""))
                errors = parsed.errors
                if not errors:
                    try:
                        summary = services.import_widgets(
                            rows=parsed.rows,
                            user=request.user,
                            dry_run=form.cleaned_data["dry_run"],
                            stock_corrections=form.cleaned_data["stock_corrections"],
                        )
                    except services.StaleImport as exc:
                        errors = [csv_io.RowError(*problem) for problem in exc.problems]
                    except services.InventoryError as exc:
                        form.add_error("file", exc.detail)
                if summary and summary.dry_run:
                    pending = form.keep()
                if summary and not summary.dry_run:
                    form.forget()
                    self.message_user(
                        request,
                        f"Imported: {len(summary.created)} created, {len(summary.updated)} updated, "
                        f"{len(summary.stock_changes)} stock corrections, {summary.unchanged} unchanged.",
                        messages.SUCCESS,
                    )
                    return redirect("admin:widgets_widget_changelist")
        context = {
            **self.admin_site.each_context(request),
            "title": "Import widgets from CSV",
            "opts": self.model._meta,
            "form": form,
            "columns": csv_io.COLUMNS,
            "errors": errors[:IMPORT_ERRORS_SHOWN],
            "errors_hidden": max(0, len(errors) - IMPORT_ERRORS_SHOWN),
            "error_count": len(errors),
            "summary": summary,
            "pending": pending,
            "pending_name": form.cleaned_data.get("filename") if pending else None,
            "stock_corrections": form.cleaned_data.get("stock_corrections") if pending else False,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/widgets/widget/import.html", context)

    def save_model(self, request, obj, form, change):
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data}
            services.update_widget(widget=obj, changes=changes, user=request.user)
        else:
            data = {name: form.cleaned_data[name] for name in form.changed_data if name != "sku"}
            created = services.create_widget(user=request.user, sku=form.cleaned_data["sku"], **data)
            obj.pk = created.pk

    def delete_view(self, request, object_id, extra_context=None):
        # The confirmation page refuses a widget with movements; one written after it
        # rendered makes the service refuse instead, and that is a message, not a 500.
        try:
            return super().delete_view(request, object_id, extra_context)
        except services.InventoryError as exc:
            self.message_user(request, exc.detail, messages.ERROR)
            return redirect("admin:widgets_widget_change", object_id)

    def delete_model(self, request, obj):
        services.delete_widget(widget=obj, user=request.user)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        # The "delete selected" action: one service call each, so each is logged.
        for widget in queryset:
            services.delete_widget(widget=widget, user=request.user)

    def adjust_view(self, request, object_id):
        """Record a stock adjustment as the signed-in staff user."""
        if not request.user.has_perm("widgets.add_stockmovement"):
            raise PermissionDenied
        widget = get_object_or_404(Widget, pk=object_id)
        form = AdjustStockForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                movement = services.adjust_stock(widget_id=widget.pk, user=request.user, **form.cleaned_data)
            except services.InventoryError as exc:
                form.add_error("delta", exc.detail)
            except services.InvalidMovement as exc:  # checked by the form already; kept as a guard
                form.add_error(exc.field, exc.detail)
            else:
                self.message_user(
                    request,
                    f"Stock of {widget.sku} changed by {movement.delta:+d}; now {movement.stock_after}.",
                    messages.SUCCESS,
                )
                return redirect("admin:widgets_widget_change", widget.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Adjust stock: {widget}",
            "opts": self.model._meta,
            "original": widget,
            "form": form,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/widgets/widget/adjust_stock.html", context)


@admin.register(Category)
class CategoryAdmin(VerbatimTextMixin, admin.ModelAdmin):
    list_display = ["name", "slug", "description"]
    search_fields = ["name", "slug"]
    readonly_fields = ["slug"]

    def save_model(self, request, obj, form, change):
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data}
            services.update_category(category=obj, changes=changes, user=request.user)
        else:
            created = services.create_category(user=request.user, **form.cleaned_data)
            obj.pk = created.pk

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except services.InventoryError as exc:  # a widget joined it after the confirmation page
            self.message_user(request, exc.detail, messages.ERROR)
            return redirect("admin:widgets_category_change", object_id)

    def delete_model(self, request, obj):
        services.delete_category(category=obj, user=request.user)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        for category in queryset:
            services.delete_category(category=category, user=request.user)


@admin.register(StockMovement)
class StockMovementAdmin(admin.ModelAdmin):
    """The ledger, read-only: movements are made by adjusting a widget's stock."""

    # The widget by its SKU (its name on hover) and the note cut short, so the list fits a
    # 1366 px screen (tests/browser/test_admin_widths.py).
    list_display = ["created", "widget_sku", "delta", "reason", "stock_after", "created_by", "short_note"]
    list_filter = ["reason", "created_at"]
    list_select_related = ["widget", "created_by"]
    search_fields = ["widget__sku", "note"]
    raw_id_fields = ["widget"]
    show_full_result_count = False
    paginator = BoundedCountPaginator
    date_hierarchy = None

    class Media:
        css = {"all": ["widgets/staff.css"]}

    @admin.display(description="Created at", ordering="created_at")
    def created(self, obj):
        return short_datetime(obj.created_at)

    @admin.display(description="Widget", ordering="widget__sku")
    def widget_sku(self, obj):
        url = reverse("admin:widgets_widget_change", args=[obj.widget_id])
        return format_html('<a href="{}" title="{}">{}</a>', url, obj.widget.name, obj.widget.sku)

    @admin.display(description="Note")
    def short_note(self, obj):
        return format_html('<span title="{}">{}</span>', obj.note, Truncator(obj.note).chars(40))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReservationStatusFilter(admin.SimpleListFilter):
    """The status as the API shows it: ``expired`` is computed from the clock."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(state, state.capitalize()) for state in Reservation.STATES]

    def queryset(self, request, queryset):
        if self.value() in Reservation.STATES:
            return queryset.in_state(self.value())
        return queryset


class ReservationWidgetFilter(admin.SimpleListFilter):
    """``?widget=<id>``: the reservations holding a widget (linked from the widget's page;
    no list of choices, there may be a million widgets)."""

    title = "widget"
    parameter_name = "widget"

    def lookups(self, request, model_admin):
        return []

    def has_output(self):
        # Applied (and shown, as "All") only when the link asks for it.
        return self.value() is not None

    def queryset(self, request, queryset):
        value = self.value()
        if value and value.isascii() and value.isdigit() and len(value) <= 18:
            return queryset.filter(items__widget_id=int(value))
        return queryset


class ReservationItemInline(admin.TabularInline):
    model = ReservationItem
    fields = ["widget", "quantity"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_view_permission(self, request, obj=None):
        # Items are part of their reservation: whoever may see it sees them.
        return request.user.has_perm("widgets.view_reservation")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    """Reservations, read-only but for the release action (``services.release_reservation``)."""

    list_display = ["reference", "state", "created_at", "expires_at", "closed_at", "created_by"]
    list_filter = [ReservationStatusFilter, ReservationWidgetFilter]
    list_select_related = ["created_by"]
    search_fields = ["reference"]
    fields = ["reference", "state", "created_by", "created_at", "expires_at", "closed_at"]
    readonly_fields = fields
    inlines = [ReservationItemInline]
    show_full_result_count = False
    paginator = BoundedCountPaginator
    actions = ["release"]

    @admin.display(description="Status")
    def state(self, obj):
        return obj.state

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # The page is read-only; "change" is the permission of the release action.
        return False

    def has_release_permission(self, request):
        return request.user.has_perm("widgets.change_reservation")

    @admin.action(description="Release selected reservations", permissions=["release"])
    def release(self, request, queryset):
        released, refused = 0, []
        for reservation in queryset.order_by("id"):
            try:
                services.release_reservation(reservation_id=reservation.pk, user=request.user)
            except services.InventoryError as exc:
                refused.append(exc.detail)
            else:
                released += 1
        if released:
            self.message_user(request, f"Released {released} reservation(s).", messages.SUCCESS)
        for detail in refused:
            self.message_user(request, detail, messages.WARNING)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens can be seen and revoked here; a key is shown only once, when issued."""

    list_display = ["prefix", "user", "name", "read_only", "created_at", "last_used_at", "expires_at", "revoked_at"]
    list_filter = ["read_only"]
    list_select_related = ["user"]
    search_fields = ["prefix", "name", "user__username"]
    fields = ["user", "name", "prefix", "read_only", "created_at", "last_used_at", "expires_at", "revoked_at"]
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        count = services.revoke_tokens(queryset)
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)


@admin.register(ChangeLogEntry)
class ChangeLogEntryAdmin(admin.ModelAdmin):
    """Who changed which widget or category: read-only, written by the services."""

    list_display = ["timestamp", "user", "action", "object_type", "object_id", "object_repr"]
    list_filter = ["action", "object_type", "timestamp"]
    list_select_related = ["user"]
    search_fields = ["object_repr", "user__username"]
    fields = ["timestamp", "user", "action", "object_type", "object_id", "object_repr", "changes"]
    readonly_fields = fields
    show_full_result_count = False

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
