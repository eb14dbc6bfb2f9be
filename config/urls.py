from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from widgets import views as site_views

urlpatterns = [
    path("", RedirectView.as_view(url="/api/", permanent=False)),
    path("healthz", site_views.healthz, name="healthz"),
    path("readyz", site_views.readyz, name="readyz"),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api/", include("widgets.api.urls")),
]

handler400 = "widgets.views.bad_request"
handler403 = "widgets.views.permission_denied"
handler404 = "widgets.views.page_not_found"
handler500 = "widgets.views.server_error"
