"""``/api/webhooks/``: subscriptions, their delivery log, ping, redeliver and secret rotation.

For the ``manager`` role (Django permissions on ``WebhookSubscription`` and ``Delivery``).
Validation lives in the serializers (the URL rule is the model field's validator, shared with
the admin); writes go through ``webhooks.services``.
"""

import django_filters
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.generics import get_object_or_404
from rest_framework.response import Response

from widgets.api.permissions import HasPermission
from widgets.api.serializers import ErrorSerializer, MultiLineTextField, StrictBooleanField, StrictInputMixin

from . import services
from .addresses import validate_webhook_url
from .models import ALL_EVENTS, SUBSCRIBABLE_EVENTS, Delivery, Event, WebhookSubscription, validate_event_types

CHANGE = HasPermission.of("webhooks.change_webhooksubscription")
VIEW_DELIVERIES = HasPermission.of("webhooks.view_delivery")


class StrictURLField(StrictInputMixin, serializers.URLField):
    json_types, json_type_name = (str,), "a string"


class WebhookSubscriptionSerializer(serializers.ModelSerializer):
    url = StrictURLField(
        max_length=2000,
        # The model field's rule (https, public addresses), shared with the admin.
        validators=[validate_webhook_url],
        help_text=(
            "Where events are POSTed. https only; the host must resolve to public addresses only "
            "(no loopback, private, link-local, multicast or reserved address), checked now and "
            "before every delivery."
        ),
    )
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=[ALL_EVENTS, *SUBSCRIBABLE_EVENTS]),
        min_length=1,
        max_length=len(SUBSCRIBABLE_EVENTS),
        validators=[validate_event_types],
        help_text='The event types to send, or `["*"]` for all of them (present and future).',
    )
    is_active = StrictBooleanField(required=False, help_text="Turn on to resume a disabled subscription.")
    description = MultiLineTextField(required=False, allow_blank=True, max_length=1000)

    class Meta:
        model = WebhookSubscription
        fields = [
            "id",
            "url",
            "event_types",
            "is_active",
            "description",
            "created_at",
            "updated_at",
            "failing_since",
            "disabled_at",
            "disabled_reason",
        ]
        read_only_fields = ["created_at", "updated_at", "failing_since", "disabled_at", "disabled_reason"]


class WebhookSecretSerializer(WebhookSubscriptionSerializer):
    """A subscription with its signing secret: only in the answer that creates or rotates it."""

    secret = serializers.CharField(
        read_only=True,
        help_text=(
            "The signing secret (`whsec_` + base64): shown only this once. Verify deliveries with it "
            "(Standard Webhooks)."
        ),
    )

    class Meta(WebhookSubscriptionSerializer.Meta):
        fields = [*WebhookSubscriptionSerializer.Meta.fields, "secret"]


class DeliveryEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = Event
        fields = ["id", "type", "occurred_at", "sequence"]
        read_only_fields = fields


class DeliverySerializer(serializers.ModelSerializer):
    event = DeliveryEventSerializer(read_only=True)
    last_duration_ms = serializers.IntegerField(
        read_only=True, allow_null=True, help_text="Duration of the last attempt."
    )
    response_excerpt = serializers.CharField(read_only=True, help_text="The first 1 KB of the last answer's body.")

    class Meta:
        model = Delivery
        fields = [
            "id",
            "event",
            "status",
            "attempts",
            "last_status_code",
            "last_duration_ms",
            "last_error",
            "response_excerpt",
            "created_at",
            "last_attempt_at",
            "next_attempt_at",
            "delivered_at",
        ]
        read_only_fields = fields


class DeliveryFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Delivery.Status.choices)

    class Meta:
        model = Delivery
        fields = ["status"]


ACCEPTED = OpenApiResponse(DeliverySerializer, description="Enqueued; a worker sends it shortly.")


@extend_schema_view(
    create=extend_schema(responses={201: WebhookSecretSerializer}),
    destroy=extend_schema(responses={204: None}),
)
class WebhookSubscriptionViewSet(viewsets.ModelViewSet):
    """Webhook subscriptions: the events to POST to a URL, signed as Standard Webhooks says."""

    queryset = WebhookSubscription.objects.all()
    lookup_value_regex = r"[0-9]+"
    serializer_class = WebhookSubscriptionSerializer
    filterset_class = None  # the delivery log has its own

    def perform_create(self, serializer):
        serializer.instance = services.create_subscription(user=self.request.user, **serializer.validated_data)

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        return Response(WebhookSecretSerializer(serializer.instance).data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer):
        serializer.instance = services.update_subscription(
            subscription=serializer.instance, changes=serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.delete_subscription(subscription=instance)

    @extend_schema(request=None, responses={200: WebhookSecretSerializer})
    @action(detail=True, methods=["post"], url_path="rotate-secret", permission_classes=[CHANGE])
    def rotate_secret(self, request, pk=None, format=None):
        """Replace the signing secret; the new one is in the answer, shown only this once."""
        subscription = services.rotate_secret(subscription=self.get_object())
        return Response(WebhookSecretSerializer(subscription).data)

    @extend_schema(request=None, responses={202: ACCEPTED})
    @action(detail=True, methods=["post"], permission_classes=[CHANGE])
    def ping(self, request, pk=None, format=None):
        """Send a `webhook.ping` event to this subscription now (even a disabled one)."""
        delivery = services.ping(subscription=self.get_object())
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=DeliverySerializer(many=True), filters=True)
    @action(
        detail=True,
        methods=["get"],
        queryset=Delivery.objects.select_related("event"),
        serializer_class=DeliverySerializer,
        filterset_class=DeliveryFilter,
        permission_classes=[VIEW_DELIVERIES],
    )
    def deliveries(self, request, pk=None, format=None):
        """This subscription's deliveries, newest first: status, attempts, the last answer."""
        get_object_or_404(WebhookSubscription.objects.all(), pk=pk)
        queryset = self.filter_queryset(self.get_queryset().filter(subscription_id=pk))
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(DeliverySerializer(page, many=True).data)

    @extend_schema(
        request=None,
        responses={
            202: ACCEPTED,
            409: OpenApiResponse(
                ErrorSerializer, description="A worker is sending it right now (`delivery_in_flight`)."
            ),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        url_path=r"deliveries/(?P<delivery_id>[0-9]+)/redeliver",
        permission_classes=[CHANGE],
    )
    def redeliver(self, request, pk=None, delivery_id=None, format=None):
        """Send this delivery again now, with the same `webhook-id`, retried as a new one."""
        try:
            delivery = Delivery.objects.get(pk=delivery_id, subscription_id=pk)
        except Delivery.DoesNotExist:
            raise NotFound() from None
        try:
            delivery = services.redeliver(delivery=delivery)
        except services.DeliveryInFlight:
            return Response(
                {
                    "detail": "A worker is sending this delivery right now; try again shortly.",
                    "code": "delivery_in_flight",
                },
                status=status.HTTP_409_CONFLICT,
            )
        delivery = Delivery.objects.select_related("event").get(pk=delivery.pk)
        return Response(DeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
