"""Staff screens for webhooks: superusers only (the API serves the manager role).

Writes go through ``webhooks.services``, as the API's do.
"""

from django.contrib import admin, messages
from django.db import models
from django.urls import reverse
from django.utils.html import format_html

from . import services
from .models import Delivery, WebhookSubscription

# The database task backend registers its own screen; the delivery log is the one staff need.
try:
    from django_tasks_db.models import DBTaskResult

    admin.site.unregister(DBTaskResult)
except admin.sites.NotRegistered:  # pragma: no cover - depends on app order
    pass


class SuperuserOnly:
    """Subscriptions carry signing secrets and point our server at other systems."""

    def has_module_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request):
        return request.user.is_active and request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_active and request.user.is_superuser


@admin.register(WebhookSubscription)
class WebhookSubscriptionAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = ["url", "event_types", "is_active", "failing_since", "disabled_reason"]
    list_filter = ["is_active"]
    fields = [
        "url",
        "event_types",
        "is_active",
        "description",
        "deliveries_link",
        "created_at",
        "failing_since",
        "disabled_at",
        "disabled_reason",
    ]
    readonly_fields = ["deliveries_link", "created_at", "failing_since", "disabled_at", "disabled_reason"]
    actions = ["send_ping", "rotate_secret"]
    WRITABLE = ["url", "event_types", "is_active", "description"]
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    @admin.display(description="deliveries")
    def deliveries_link(self, obj):
        if obj.pk is None:
            return "-"
        url = reverse("admin:webhooks_delivery_changelist") + f"?subscription__id__exact={obj.pk}"
        return format_html('<a href="{}">Delivery log</a>', url)

    def save_model(self, request, obj, form, change):
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data if name in self.WRITABLE}
            saved = services.update_subscription(subscription=obj, changes=changes)
        else:
            values = {name: form.cleaned_data[name] for name in self.WRITABLE if name in form.cleaned_data}
            saved = services.create_subscription(user=request.user, **values)
            self.message_user(
                request, f"Signing secret of {saved.url}, shown only now: {saved.secret}", messages.WARNING
            )
        obj.pk, obj._state.adding = saved.pk, False  # the admin goes on with the saved object

    def delete_model(self, request, obj):
        services.delete_subscription(subscription=obj)

    def delete_queryset(self, request, queryset):
        for subscription in queryset:
            services.delete_subscription(subscription=subscription)

    @admin.action(description="Send a ping to the selected subscriptions")
    def send_ping(self, request, queryset):
        for subscription in queryset:
            services.ping(subscription=subscription)
        self.message_user(request, f"Ping enqueued for {len(queryset)} subscription(s); see the delivery log.")

    @admin.action(description="Rotate the signing secret of the selected subscriptions")
    def rotate_secret(self, request, queryset):
        for subscription in queryset:
            rotated = services.rotate_secret(subscription=subscription)
            self.message_user(
                request, f"New signing secret of {rotated.url}, shown only now: {rotated.secret}", messages.WARNING
            )


@admin.register(Delivery)
class DeliveryAdmin(SuperuserOnly, admin.ModelAdmin):
    list_display = [
        "event_type",
        "subscription",
        "status",
        "attempts",
        "last_status_code",
        "last_duration_ms",
        "next_attempt_at",
        "created_at",
    ]
    list_filter = ["status", "subscription"]
    list_select_related = ["event", "subscription"]
    fields = [
        "subscription",
        "event_type",
        "event_id",
        "status",
        "attempts",
        "created_at",
        "last_attempt_at",
        "last_status_code",
        "last_duration_ms",
        "last_error",
        "response_excerpt",
        "next_attempt_at",
        "delivered_at",
        "payload",
    ]
    readonly_fields = fields
    actions = ["redeliver"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False  # read-only; the action below sends one again

    @admin.display(description="event")
    def event_type(self, obj):
        return obj.event.type

    @admin.display(description="payload")
    def payload(self, obj):
        return format_html("<pre>{}</pre>", obj.event.envelope())

    @admin.action(description="Redeliver the selected deliveries now")
    def redeliver(self, request, queryset):
        sent = busy = 0
        for delivery in queryset:
            try:
                services.redeliver(delivery=delivery)
                sent += 1
            except services.DeliveryInFlight:
                busy += 1
        self.message_user(request, f"{sent} delivery(ies) enqueued; {busy} being sent right now were left alone.")
