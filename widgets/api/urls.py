from django.urls import path

from webhooks.api import WebhookSubscriptionViewSet

from . import views

router = views.ApiRouter()
# Widgets first: the most requested (the patterns are tried in this order), and the first
# link on the API's root page.
router.register("widgets", views.WidgetViewSet)
router.register("categories", views.CategoryViewSet)
router.register("movements", views.StockMovementViewSet)
router.register("changes", views.ChangeLogViewSet)
router.register("auth/tokens", views.ApiTokenViewSet, basename="apitoken")
router.register("adjustments", views.AdjustmentBatchViewSet, basename="adjustment")
router.register("reservations", views.ReservationViewSet)
router.register("webhooks", WebhookSubscriptionViewSet, basename="webhook")

urlpatterns = [
    path("auth/token/", views.TokenIssueView.as_view(), name="token-issue"),
    *router.urls,
]
