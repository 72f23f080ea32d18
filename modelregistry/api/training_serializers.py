"""Training specs and runs as the API shows them."""

from datetime import datetime
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .. import scheduling
from ..models import TrainingRun, TrainingSpec


class ScheduleSerializer(serializers.Serializer):
    periodic_task = serializers.IntegerField(help_text="The django-celery-beat PeriodicTask id.")
    description = serializers.CharField(help_text="Its crontab or interval.")
    enabled = serializers.BooleanField()
    next_runs = serializers.ListField(
        child=serializers.DateTimeField(), help_text="Next planned runs, in the spec's time zone."
    )


class TrainingSpecSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name", read_only=True)
    dataset = serializers.CharField(source="dataset.name", read_only=True)
    schedule = serializers.SerializerMethodField()

    class Meta:
        model = TrainingSpec
        fields = [
            "id",
            "name",
            "model",
            "dataset",
            "estimator",
            "params",
            "holdout_share",
            "seed",
            "primary_metric",
            "promotion_policy",
            "timezone",
            "schedule",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(ScheduleSerializer(allow_null=True))
    def get_schedule(self, spec: TrainingSpec) -> dict[str, Any] | None:
        task = spec.periodic_task
        if task is None:
            return None
        next_runs: list[datetime] = scheduling.next_run_times(spec)
        return {
            "periodic_task": task.pk,
            "description": scheduling.describe(task),
            "enabled": task.enabled,
            "next_runs": [at.isoformat() for at in next_runs],
        }


class TrainingRunSerializer(serializers.ModelSerializer):
    spec_name = serializers.CharField(
        source="spec.name", read_only=True, allow_null=True, help_text="Null when spec is."
    )
    version = serializers.CharField(
        source="version.ref",
        read_only=True,
        allow_null=True,
        help_text="The version it registered: null unless it succeeded (or once that version "
        "is deleted).",
    )

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "spec",
            "spec_name",
            "trigger",
            "status",
            "metrics",
            "production_metrics",
            "version",
            "promoted",
            "promotion_reason",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields
