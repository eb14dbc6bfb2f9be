from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from widgets import views as site_views
from widgets.api.throttling import throttle_login

urlpatterns = [
    # First: the API is nearly every request, and Django tries the patterns in order (a
    # path under api/ that the API does not have goes on to the docs below).
    path("api/", include("widgets.api.urls")),
    path("", RedirectView.as_view(url="/api/", permanent=False)),
    path("healthz", site_views.healthz, name="healthz"),
    path("readyz", site_views.readyz, name="readyz"),
    # The two login forms, throttled like POST /api/auth/token/. Listed before the includes
    # that also define them, so these are the ones that answer.
    path("admin/login/", throttle_login(admin.site.login)),
    path(
        "api-auth/login/",
        throttle_login(LoginView.as_view(template_name="rest_framework/login.html")),
    ),
    path("admin/", admin.site.urls),
    path("api-auth/", include("rest_framework.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The docs pages are HTML only: OPTIONS would have no template to render (a 500).
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", http_method_names=["get", "head"]),
        name="swagger-ui",
    ),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", http_method_names=["get", "head"]),
        name="redoc",
    ),
]

handler400 = "widgets.views.bad_request"
handler403 = "widgets.views.permission_denied"
handler404 = "widgets.views.page_not_found"
handler500 = "widgets.views.server_error"
