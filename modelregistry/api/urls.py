"""API routes."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from .registry_views import ModelVersionViewSet, RegisteredModelViewSet
from .training_views import TrainingRunViewSet, TrainingSpecViewSet

router = SimpleRouter()  # as predictions/api/urls.py
router.register("models", RegisteredModelViewSet, basename="model")
router.register("training/specs", TrainingSpecViewSet, basename="training-spec")
router.register("training/runs", TrainingRunViewSet, basename="training-run")
urlpatterns = router.urls

# Registry: a model's versions, nested under its name.
urlpatterns += [
    path(
        "models/<slug:model_name>/versions/",
        ModelVersionViewSet.as_view({"get": "list", "post": "create"}),
        name="model-versions",
    ),
    path(
        "models/<slug:model_name>/versions/<int:number>/",
        ModelVersionViewSet.as_view({"get": "retrieve"}),
        name="model-version-detail",
    ),
    path(
        "models/<slug:model_name>/versions/<int:number>/promote/",
        ModelVersionViewSet.as_view({"post": "promote"}),
        name="model-version-promote",
    ),
]
