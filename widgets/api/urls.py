from rest_framework.routers import DefaultRouter

from . import views

router = DefaultRouter()
router.register("categories", views.CategoryViewSet)
router.register("widgets", views.WidgetViewSet)
router.register("movements", views.StockMovementViewSet)
router.register("adjustments", views.AdjustmentBatchViewSet, basename="adjustment")

urlpatterns = router.urls
