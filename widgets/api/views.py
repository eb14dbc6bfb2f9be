"""API viewsets: declarations plus thin hand-offs to ``widgets.services``."""

from django.contrib.auth import authenticate
from django.db import IntegrityError
from django.http import Http404, StreamingHttpResponse
from django.utils.safestring import mark_safe
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, generics, mixins, routers, serializers, status, viewsets
from rest_framework.compat import apply_markdown
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.generics import get_object_or_404
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.reverse import reverse

from .. import services
from ..models import ApiToken, Category, ChangeLogEntry, Reservation, StockMovement, Widget
from .conditional import ConditionalMixin, etag_for
from .filters import CategoryFilter, ChangeLogFilter, ReservationFilter, StockMovementFilter, WidgetFilter
from .idempotency import IdempotentMixin
from .permissions import HasPermission, IsAuthenticated
from .renderers import WidgetCSVRenderer
from .schema import IDEMPOTENT, IDEMPOTENT_RESPONSES, VALIDATION_ERROR, WIDGET_ETAG, conditional_schema
from .serializers import (
    AdjustmentBatchSerializer,
    AdjustmentSerializer,
    ApiTokenSerializer,
    BatchResultSerializer,
    CategorySerializer,
    ChangeLogEntrySerializer,
    CommittedReservationSerializer,
    ErrorSerializer,
    InsufficientStockSerializer,
    IssuedTokenSerializer,
    ItemErrorSerializer,
    ReservationConflictSerializer,
    ReservationCreateSerializer,
    ReservationExtendSerializer,
    ReservationSerializer,
    StockMovementSerializer,
    TokenRequestSerializer,
    WidgetSerializer,
    WidgetUpdateSerializer,
)
from .throttling import LOGIN_THROTTLES

CONFLICT = OpenApiResponse(ErrorSerializer, description="Conflicts with the current state.")
SKU_CLASH = {"sku": ["A widget with this SKU already exists."]}


@extend_schema_view(**conditional_schema(CategorySerializer))
class CategoryViewSet(ConditionalMixin, viewsets.ModelViewSet):
    """Widget categories. A category that still has widgets cannot be deleted (409)."""

    queryset = Category.objects.all()
    lookup_value_regex = r"[0-9]+"
    serializer_class = CategorySerializer
    filterset_class = CategoryFilter

    # Name and slug are unique in the database; the constraint, not a racy pre-check, decides.
    def perform_create(self, serializer):
        try:
            serializer.instance = services.create_category(user=self.request.user, **serializer.validated_data)
        except IntegrityError:
            raise self._name_clash(serializer.validated_data["name"]) from None

    def perform_update(self, serializer):
        try:
            serializer.instance = services.update_category(
                category=serializer.instance,
                changes=serializer.validated_data,
                user=self.request.user,
                expected_version=self.expected_version(),
            )
        except IntegrityError:
            raise self._name_clash(serializer.validated_data.get("name", ""), serializer.instance.pk) from None

    @staticmethod
    def _name_clash(name, exclude_pk=None) -> serializers.ValidationError:
        problem = Category.objects.name_problem(name, exclude_pk=exclude_pk)
        return serializers.ValidationError({"name": [problem or "A category with this name already exists."]})

    def perform_destroy(self, instance):
        services.delete_category(category=instance, user=self.request.user, expected_version=self.expected_version())


_WIDGETS_WITH_AVAILABILITY = []


def _widgets_with_availability():
    """``Widget.objects.with_availability()``, resolved once (see WidgetViewSet.get_queryset)."""
    if not _WIDGETS_WITH_AVAILABILITY:
        _WIDGETS_WITH_AVAILABILITY.append(Widget.objects.with_availability())
    return _WIDGETS_WITH_AVAILABILITY[0]


@extend_schema_view(
    **conditional_schema(WidgetSerializer, idempotent_create=True, update_request=WidgetUpdateSerializer),
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "format",
                enum=["json", "csv"],
                description=(
                    "`csv` streams every matching widget (same filters and ordering, no "
                    "pagination) in the import layout: sku, name, description, category "
                    "(slug), price, reorder_level, is_active, stock; then reserved and "
                    "available (export only: an import ignores them)."
                ),
            )
        ],
        responses={
            (200, "application/json"): WidgetSerializer(many=True),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="The widgets as CSV."),
        },
    ),
)
class WidgetViewSet(IdempotentMixin, ConditionalMixin, viewsets.ModelViewSet):
    """Widgets. Stock is set on create and afterwards changed only through ``adjust``."""

    idempotent_actions = ("create", "adjust")
    queryset = Widget.objects.all()
    lookup_value_regex = r"[0-9]+"
    serializer_class = WidgetSerializer
    filterset_class = WidgetFilter

    def get_queryset(self):
        if self.action == "movements":
            # The nested list is /api/movements/ narrowed to this widget.
            return super().get_queryset().filter(widget_id=self.kwargs.get("pk"))
        # The annotated queryset is built (its expressions resolved) once per process and
        # cloned for each request: ``reserved`` is still counted at the time each query
        # runs, as ReservedUnits without ``now`` reads the clock when compiled.
        return _widgets_with_availability().all()

    def get_object(self):
        # A widget's retrieve, the hottest read, from SQL compiled once per process. Filters
        # (query parameters) apply to a detail lookup too, so a request with any but
        # ``format`` takes DRF's way.
        if self.action == "retrieve" and not self.request.query_params.keys() - {"format"}:
            widget = Widget.objects.get_with_availability(self.kwargs[self.lookup_url_kwarg or self.lookup_field])
            if widget is None:
                raise Http404
            self.check_object_permissions(self.request, widget)
            return widget
        return super().get_object()

    def etag(self, instance) -> str:
        # The representation shows the units reserved: they are part of the tag.
        return etag_for(instance.version, instance.reserved)

    def get_renderers(self):
        # CSV is offered by the list only; ?format=csv elsewhere is a 404.
        renderers = super().get_renderers()
        if self.action == "list":
            renderers.append(WidgetCSVRenderer())
        return renderers

    def list(self, request, *args, **kwargs):
        if isinstance(request.accepted_renderer, WidgetCSVRenderer):
            # Streamed straight from the database; pagination does not apply to a file
            # (its parameters are still checked).
            self.paginator.check_parameters(request)
            queryset = self.filter_queryset(self.get_queryset())
            response = StreamingHttpResponse(
                request.accepted_renderer.render(queryset), content_type="text/csv; charset=utf-8"
            )
            response["Content-Disposition"] = 'attachment; filename="widgets.csv"'
            return response
        return super().list(request, *args, **kwargs)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # An error (bad filter, 401, 403) asked for as CSV is still a JSON error body.
        if response.status_code >= 400 and isinstance(getattr(response, "accepted_renderer", None), WidgetCSVRenderer):
            response.accepted_renderer = JSONRenderer()
            response.accepted_media_type = JSONRenderer.media_type
        return response

    def perform_create(self, serializer):
        data = serializer.validated_data
        try:
            serializer.instance = services.create_widget(user=self.request.user, **data)
        except services.DuplicateSku:
            raise serializers.ValidationError(SKU_CLASH) from None

    def perform_update(self, serializer):
        changes = {k: v for k, v in serializer.validated_data.items() if k != "stock"}
        try:
            serializer.instance = services.update_widget(
                widget=serializer.instance,
                changes=changes,
                user=self.request.user,
                expected_version=self.expected_version(),
            )
        except services.DuplicateSku:
            raise serializers.ValidationError(SKU_CLASH) from None

    def perform_destroy(self, instance):
        services.delete_widget(widget=instance, user=self.request.user, expected_version=self.expected_version())

    @extend_schema(
        request=AdjustmentSerializer,
        parameters=[*IDEMPOTENT, WIDGET_ETAG],
        responses={
            201: StockMovementSerializer,
            409: OpenApiResponse(
                InsufficientStockSerializer,
                description=(
                    "Not enough units available (stock - reserved; nothing written), "
                    "or the same Idempotency-Key is in flight."
                ),
            ),
            **IDEMPOTENT_RESPONSES,
        },
    )
    @action(
        detail=True,
        methods=["post"],
        serializer_class=AdjustmentSerializer,
        permission_classes=[HasPermission.of("widgets.add_stockmovement")],
    )
    def adjust(self, request, pk=None, format=None):
        """Add or remove stock; recorded as a movement in the ledger."""
        serializer = AdjustmentSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            movement = services.adjust_stock(widget_id=pk, user=request.user, **serializer.validated_data)
        except Widget.DoesNotExist:
            raise NotFound() from None
        return Response(
            StockMovementSerializer(movement).data,
            status=status.HTTP_201_CREATED,
            headers={"ETag": etag_for(movement.widget.version, movement.widget.reserved)},
        )

    @extend_schema(responses=StockMovementSerializer(many=True), filters=True)
    @action(
        detail=True,
        methods=["get"],
        queryset=StockMovement.objects.select_related("created_by"),
        serializer_class=StockMovementSerializer,
        filterset_class=StockMovementFilter,
        permission_classes=[HasPermission.of("widgets.view_stockmovement")],
    )
    def movements(self, request, pk=None, format=None):
        """This widget's stock movements, newest first."""
        get_object_or_404(Widget.objects.all(), pk=pk)
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response(StockMovementSerializer(page, many=True).data)


class StockMovementViewSet(viewsets.ReadOnlyModelViewSet):
    """The stock ledger, newest first. Append-only: movements are made by adjusting stock."""

    queryset = StockMovement.objects.select_related("created_by")
    lookup_value_regex = r"[0-9]+"
    serializer_class = StockMovementSerializer
    filterset_class = StockMovementFilter


@extend_schema_view(
    create=extend_schema(
        request=AdjustmentBatchSerializer,
        parameters=IDEMPOTENT,
        responses={
            201: BatchResultSerializer,
            400: OpenApiResponse(
                {"anyOf": [{"$ref": "#/components/schemas/ItemError"}, VALIDATION_ERROR]},
                description=(
                    "An item is invalid or names a widget that does not exist (`{detail, code, index, field}`, "
                    "`index` naming the first), or "
                    "another part of the request is (`{field: [messages]}`); nothing applied."
                ),
            ),
            409: OpenApiResponse(
                ItemErrorSerializer,
                description="An item would take more than is available, stock - reserved (`index` "
                "names the first; nothing applied), or the same Idempotency-Key is in flight.",
            ),
            **IDEMPOTENT_RESPONSES,
        },
    )
)
class AdjustmentBatchViewSet(IdempotentMixin, viewsets.GenericViewSet):
    """Several stock adjustments applied all or nothing, e.g. a goods-received note."""

    idempotent_actions = ("create",)
    serializer_class = AdjustmentBatchSerializer
    permission_classes = [HasPermission.of("widgets.add_stockmovement")]

    def create(self, request, *args, **kwargs):
        """Apply 1-500 adjustments in one transaction; any failing item fails them all."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        movements = services.adjust_stock_batch(items=serializer.validated_data["items"], user=request.user)
        return Response(BatchResultSerializer({"movements": movements}).data, status=status.HTTP_201_CREATED)


RESERVATION_CONFLICT = OpenApiResponse(
    ReservationConflictSerializer,
    description=(
        "The reservation is not active: `reservation_expired` (active, but past expires_at) or "
        "`reservation_not_active` (committed or released); or the same Idempotency-Key is in flight. "
        "Nothing was changed."
    ),
)


@extend_schema_view(
    create=extend_schema(
        request=ReservationCreateSerializer,
        parameters=IDEMPOTENT,
        responses={
            201: ReservationSerializer,
            400: OpenApiResponse(
                {"anyOf": [{"$ref": "#/components/schemas/ItemError"}, VALIDATION_ERROR]},
                description=(
                    "An item is invalid, names a widget twice or a widget that does not exist "
                    "(`{detail, code, index, field}`, `index` naming the first), or another part "
                    "of the request is (`{field: [messages]}`); nothing held."
                ),
            ),
            409: OpenApiResponse(
                ItemErrorSerializer,
                description=(
                    "An item asks for more than is available (`insufficient_stock` with `index`, "
                    "`widget` and `available`; nothing held), or the same Idempotency-Key is in flight."
                ),
            ),
            **IDEMPOTENT_RESPONSES,
        },
    ),
)
class ReservationViewSet(
    IdempotentMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Units held for an order until ``expires_at``, then committed (sold) or released;
    newest first. An active reservation past ``expires_at`` is ``expired`` and holds nothing."""

    idempotent_actions = ("create", "commit", "release", "extend")
    queryset = Reservation.objects.select_related("created_by").prefetch_related("items")
    lookup_value_regex = r"[0-9]+"
    serializer_class = ReservationSerializer
    filterset_class = ReservationFilter

    def get_serializer_class(self):
        return ReservationCreateSerializer if self.action == "create" else ReservationSerializer

    def create(self, request, *args, **kwargs):
        """Hold stock for an order: every item, or none.

        1-100 items, held for `ttl_seconds` (60-86400, default 900).
        """
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reservation = services.create_reservation(user=request.user, **serializer.validated_data)
        return Response(
            ReservationSerializer(reservation, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        request=None,
        parameters=IDEMPOTENT,
        responses={201: CommittedReservationSerializer, 409: RESERVATION_CONFLICT, **IDEMPOTENT_RESPONSES},
    )
    @action(detail=True, methods=["post"], permission_classes=[HasPermission.of("widgets.change_reservation")])
    def commit(self, request, pk=None, format=None):
        """Sell what the reservation holds: one `sold` movement per item, all in one transaction."""
        reservation, movements = services.commit_reservation(reservation_id=pk, user=request.user)
        reservation.movements = movements
        return Response(
            CommittedReservationSerializer(reservation, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(
        request=None,
        parameters=IDEMPOTENT,
        responses={200: ReservationSerializer, 409: RESERVATION_CONFLICT, **IDEMPOTENT_RESPONSES},
    )
    @action(detail=True, methods=["post"], permission_classes=[HasPermission.of("widgets.change_reservation")])
    def release(self, request, pk=None, format=None):
        """Give the held units back; the reservation becomes `released`."""
        reservation = services.release_reservation(reservation_id=pk, user=request.user)
        return Response(ReservationSerializer(reservation, context=self.get_serializer_context()).data)

    @extend_schema(
        request=ReservationExtendSerializer,
        parameters=IDEMPOTENT,
        responses={200: ReservationSerializer, 409: RESERVATION_CONFLICT, **IDEMPOTENT_RESPONSES},
    )
    @action(
        detail=True,
        methods=["post"],
        serializer_class=ReservationExtendSerializer,
        permission_classes=[HasPermission.of("widgets.change_reservation")],
    )
    def extend(self, request, pk=None, format=None):
        """Extend a hold.

        The units are held until `ttl_seconds` from now; an extension never shortens the hold.
        """
        serializer = ReservationExtendSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        reservation = services.extend_reservation(
            reservation_id=pk, user=request.user, ttl_seconds=serializer.validated_data["ttl_seconds"]
        )
        return Response(ReservationSerializer(reservation, context=self.get_serializer_context()).data)


class ChangeLogViewSet(viewsets.ReadOnlyModelViewSet):
    """Who created, changed or deleted which widget or category, and who reserved stock or
    committed, released or extended a reservation; newest first.

    Stock adjustments are not here: the ledger (``/api/movements/``) is their log.
    """

    queryset = ChangeLogEntry.objects.select_related("user")
    lookup_value_regex = r"[0-9]+"
    serializer_class = ChangeLogEntrySerializer
    filterset_class = ChangeLogFilter


# --- Tokens ---------------------------------------------------------------------------------------


class InvalidCredentials(exceptions.APIException):
    # One message for a wrong username and a wrong password alike: no hint which was wrong.
    status_code = status.HTTP_400_BAD_REQUEST
    default_detail = "Unable to log in with the provided username and password."
    default_code = "invalid_credentials"


class TokenIssueView(generics.GenericAPIView):
    """Exchange a username and password for a new API token."""

    # Credentials are in the body; a stale Authorization header must not stand in the way.
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = LOGIN_THROTTLES
    serializer_class = TokenRequestSerializer

    @extend_schema(
        operation_id="auth_token_create",
        auth=[],
        responses={
            201: IssuedTokenSerializer,
            400: OpenApiResponse(description="Invalid input, or wrong username or password (`invalid_credentials`)."),
        },
    )
    def post(self, request):
        """Issue a token. Its key is in the response and shown only this once."""
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        options = serializer.validated_data
        # Unknown users cost a password hash too, so timing does not tell them apart.
        user = authenticate(request._request, username=options["username"], password=options["password"])
        if user is None:  # wrong username, wrong password or inactive user
            raise InvalidCredentials()
        token, raw_key = ApiToken.objects.issue(
            user=user,
            name=options["name"],
            expires_in_days=options.get("expires_in_days"),
            read_only=options["read_only"],
        )
        token.raw_key = raw_key
        return Response(IssuedTokenSerializer(token).data, status=status.HTTP_201_CREATED)


@extend_schema_view(destroy=extend_schema(summary="Revoke one of your tokens", responses={204: None}))
class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    """The caller's own API tokens, newest first; revoked ones stay listed with ``revoked_at``."""

    queryset = ApiToken.objects.all()
    lookup_value_regex = r"[0-9]+"
    serializer_class = ApiTokenSerializer
    permission_classes = [IsAuthenticated]

    def get_queryset(self):
        # Someone else's token is simply not there: 404, not 403.
        return super().get_queryset().filter(user=self.request.user)

    def perform_destroy(self, instance):
        services.revoke_tokens(ApiToken.objects.filter(pk=instance.pk))


# --- The API root -------------------------------------------------------------------------------


class ApiRootView(routers.APIRootView):
    """The API's home page: every collection, then the token endpoint, docs, schema and admin."""

    registry = ()  # the router's (prefix, viewset, basename), given by ApiRouter
    # Pages outside the router, with one line each: (key, URL name, what it is).
    other_pages = (
        ("auth/token", "token-issue", "POST a username and password for an API token (shown once)."),
        ("docs", "swagger-ui", "Swagger UI: every operation, with its parameters and answers."),
        ("redoc", "redoc", "ReDoc: the same reference as one readable page."),
        ("schema", "schema", "The OpenAPI 3 schema (`?format=json` for JSON)."),
        ("admin", "admin:index", "The Django admin: stock dashboard, Adjust stock, CSV import, tokens."),
    )

    def get_view_name(self):
        return "Widget Inventory API"

    def get(self, request, *args, **kwargs):
        links = super().get(request, *args, **kwargs).data
        for key, url_name, _ in self.other_pages:
            links[key] = reverse(url_name, request=request)
        return Response(links)

    def get_view_description(self, html=False):
        lines = [
            "Widgets, categories and an append-only stock ledger. API clients send "
            "`Authorization: Token <key>`; in this browsable API, log in at the top right.",
            "",
        ]
        for prefix, viewset, basename in self.registry:
            url = reverse(f"{basename}-list", request=self.request)
            lines.append(f"- [{prefix}]({url}): {_first_paragraph(viewset.__doc__)}")
        for key, url_name, text in self.other_pages:
            lines.append(f"- [{key}]({reverse(url_name, request=self.request)}): {text}")
        description = "\n".join(lines)
        return mark_safe(apply_markdown(description)) if html and apply_markdown else description


def _first_paragraph(docstring: str | None) -> str:
    return " ".join((docstring or "").strip().split("\n\n", 1)[0].split())


class ApiRouter(routers.DefaultRouter):
    """DefaultRouter whose root page is ``ApiRootView``."""

    APIRootView = ApiRootView

    def get_api_root_view(self, api_urls=None):
        api_root_dict = {prefix: f"{basename}-list" for prefix, _, basename in self.registry}
        return self.APIRootView.as_view(api_root_dict=api_root_dict, registry=tuple(self.registry))
