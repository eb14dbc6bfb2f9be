"""Staff screens. Every stock change made here goes through ``widgets.services``."""
from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.forms.models import BaseInlineFormSet
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from . import services
from .models import ApiToken, Category, StockMovement, Widget

INLINE_MOVEMENTS = 20


class LowStockFilter(admin.SimpleListFilter):
    title = "stock level"
    parameter_name = "low_stock"

    def lookups(self, request, model_admin):
        return [("yes", "Low stock (at or below reorder level)"), ("no", "Above reorder level")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.low_stock()
        if self.value() == "no":
            return queryset.exclude(stock__lte=F("reorder_level"))
        return queryset


class RecentMovementsFormSet(BaseInlineFormSet):
    # A widget may have a long history: show the newest rows and link to the rest.
    def get_queryset(self):
        return super().get_queryset()[:INLINE_MOVEMENTS]


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
    note = forms.CharField(max_length=255, required=False)

    def clean_delta(self):
        delta = self.cleaned_data["delta"]
        if delta == 0:
            raise forms.ValidationError("The change must not be zero.")
        return delta


@admin.register(Widget)
class WidgetAdmin(admin.ModelAdmin):
    list_display = [
        "sku", "name", "category", "stock", "reorder_level", "is_low_stock", "price",
        "is_active", "updated_at",
    ]
    list_filter = ["category", "is_active", LowStockFilter]
    list_select_related = ["category"]
    search_fields = ["sku", "name"]
    readonly_fields = ["stock", "created_at", "updated_at", "movement_history_link"]
    fields = [
        "sku", "name", "description", "category", "price", "reorder_level", "is_active",
        "stock", "movement_history_link", "created_at", "updated_at",
    ]
    inlines = [StockMovementInline]
    show_full_result_count = False
    change_form_template = "admin/widgets/widget/change_form.html"
    delete_confirmation_template = "admin/widgets/widget/delete_confirmation.html"

    @admin.display(boolean=True, description="Low stock", ordering="stock")
    def is_low_stock(self, obj):
        return obj.low_stock

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
            )
        ]
        return custom + super().get_urls()

    def save_model(self, request, obj, form, change):
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data}
            services.update_widget(widget=obj, changes=changes, user=request.user)
        else:
            data = {name: form.cleaned_data[name] for name in form.changed_data if name != "sku"}
            created = services.create_widget(user=request.user, sku=form.cleaned_data["sku"].upper(), **data)
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

    def delete_queryset(self, request, queryset):
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
class CategoryAdmin(admin.ModelAdmin):
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

    def delete_queryset(self, request, queryset):
        for category in queryset:
            services.delete_category(category=category, user=request.user)


@admin.register(StockMovement)
class StockMovementAdmin(admin.ModelAdmin):
    """The ledger, read-only: movements are made by adjusting a widget's stock."""

    list_display = ["created_at", "widget", "delta", "reason", "stock_after", "created_by", "note"]
    list_filter = ["reason", "created_at"]
    list_select_related = ["widget", "created_by"]
    search_fields = ["widget__sku", "note"]
    raw_id_fields = ["widget"]
    show_full_result_count = False
    date_hierarchy = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} token(s).", messages.SUCCESS)
