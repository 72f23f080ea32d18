"""App configuration for the model registry."""

from django.apps import AppConfig
from django.db.models.signals import post_delete


class ModelRegistryConfig(AppConfig):
    name = "modelregistry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from . import scheduling
        from .models import TrainingSpec

        post_delete.connect(
            scheduling.delete_schedule, sender=TrainingSpec, dispatch_uid="delete-spec-schedule"
        )
