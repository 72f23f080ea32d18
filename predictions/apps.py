"""App configuration for prediction jobs."""

from django.apps import AppConfig
from django.db.models.signals import post_delete


class PredictionsConfig(AppConfig):
    name = "predictions"
    verbose_name = "Predictions"

    def ready(self) -> None:
        from . import signals
        from .models import PredictionJob

        post_delete.connect(
            signals.delete_files_of_deleted_job,
            sender=PredictionJob,
            dispatch_uid="delete-files-of-deleted-job",
        )
