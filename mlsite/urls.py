"""URL routes: admin, API v1 and health."""

from django.contrib import admin
from django.contrib.auth.views import LoginView
from django.urls import include, path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView
from rest_framework.routers import APIRootView

from .admin_views import dashboard_view, job_progress_view
from .api import ObtainToken, throttle_password_posts
from .health import healthz
from .metrics import metrics_view
from .schema import SchemaView

# Under /api/ an error outside DRF answers JSON too (an unknown address: api.json_not_found).
handler400 = "mlsite.api.bad_request"
handler500 = "mlsite.api.server_error"

# What GET /api/v1/ lists (the routers' own roots would each list only their app).
API_ROOT = {
    "jobs": "job-list",
    "models": "model-list",
    "training/specs": "training-spec-list",
    "training/runs": "training-run-list",
}

# The admin's "View site" link: nothing is served at /, and the API's root lists what is.
admin.site.site_url = "/api/v1/"

urlpatterns = [
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path(
        "admin/dashboard/progress.json",
        admin.site.admin_view(job_progress_view),
        name="admin-job-progress",
    ),
    # Sign-in pages, each counted against the password throttle before Django's own view.
    path("admin/login/", throttle_password_posts(admin.site.login)),
    path(
        "api-auth/login/",
        throttle_password_posts(LoginView.as_view(template_name="rest_framework/login.html")),
    ),
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/auth/token/", ObtainToken.as_view(), name="api-token"),
    path("api/v1/", APIRootView.as_view(api_root_dict=API_ROOT), name="api-root"),
    # Jobs first: a request tries every route of an include that comes before its own.
    path("api/v1/", include("predictions.api.urls")),
    path("api/v1/", include("modelregistry.api.urls")),
    path("api/schema/", SchemaView.as_view(), name="schema"),
    path(
        "api/schema/swagger-ui/",
        SpectacularSwaggerView.as_view(url_name="schema"),
        name="swagger-ui",
    ),
    path("api/schema/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("api-auth/", include("rest_framework.urls")),  # sign-in for the browsable API
]
