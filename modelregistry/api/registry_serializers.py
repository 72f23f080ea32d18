"""Shapes of the registry API: models, versions, uploads and stage changes."""

from typing import Any

from rest_framework import serializers

from mlsite.api import refuse_unknown_fields
from mlsite.parsers import StrictJSONField

from ..models import ArtifactFormat, ModelVersion, RegisteredModel, Stage, StageChange


class RegisteredModelSerializer(serializers.ModelSerializer):
    features = serializers.JSONField(source="input_schema", read_only=True)
    production_version = serializers.IntegerField(read_only=True, allow_null=True)
    versions_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = RegisteredModel
        fields = [
            "name",
            "task_kind",
            "description",
            "features",
            "production_version",
            "versions_count",
            "created_at",
        ]


class StageChangeSerializer(serializers.ModelSerializer):
    changed_by = serializers.CharField(
        source="changed_by.username",
        read_only=True,
        allow_null=True,
        help_text="Null when no user made the change (the demo seed, a training run's "
        "promotion) or the user was deleted.",
    )

    class Meta:
        model = StageChange
        fields = ["from_stage", "to_stage", "changed_by", "changed_at", "note"]


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="registered_model.name", read_only=True)
    version = serializers.IntegerField(source="number", read_only=True)
    format = serializers.CharField(source="artifact_format", read_only=True)
    created_by = serializers.CharField(
        source="created_by.username",
        read_only=True,
        allow_null=True,
        help_text="Null when no user made it (the demo seed, a training run) or the user was "
        "deleted.",
    )

    class Meta:
        model = ModelVersion
        fields = [
            "model",
            "version",
            "ref",
            "stage",
            "format",
            "sha256",
            "size",
            "estimator_class",
            "library_versions",
            "metrics",
            "params",
            "source",
            "is_usable",
            "unusable_reason",
            "description",
            "created_by",
            "created_at",
        ]


class ModelVersionDetailSerializer(ModelVersionSerializer):
    stage_history = StageChangeSerializer(source="stage_changes", many=True, read_only=True)

    class Meta(ModelVersionSerializer.Meta):
        fields = [*ModelVersionSerializer.Meta.fields, "stage_history"]


class UploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A joblib (.joblib, .pkl) or skops (.skops) artifact.")
    format = serializers.ChoiceField(
        choices=ArtifactFormat.choices,
        required=False,
        help_text="Defaults to skops for a .skops file name, else joblib.",
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    metrics = StrictJSONField(
        required=False,
        binary=True,
        help_text='Holdout metrics, e.g. {"accuracy": 0.97}: at most MAX_METRICS (50), '
        "names of 1 to MAX_METRIC_NAME_LENGTH (100) characters, else 400 bad_metrics.",
    )

    def validate_metrics(self, metrics: Any) -> dict[str, float]:
        if not isinstance(metrics, dict) or not all(
            isinstance(value, int | float) and not isinstance(value, bool)
            for value in metrics.values()
        ):
            raise serializers.ValidationError("metrics must be an object of numbers")
        return metrics

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        refuse_unknown_fields(self)  # a misspelt "metric" or "desc" is not dropped in silence
        if "format" not in data:
            is_skops = data["file"].name.lower().endswith(".skops")
            data["format"] = ArtifactFormat.SKOPS if is_skops else ArtifactFormat.JOBLIB
        return data


class PromoteSerializer(serializers.Serializer):
    stage = serializers.ChoiceField(choices=Stage.choices, help_text="The target stage.")
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=300)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        refuse_unknown_fields(self)  # as job submission does: a misspelt option is no no-op
        return data


class RollbackSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="", max_length=300)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        refuse_unknown_fields(self)
        return data
