"""Shapes of job requests and responses; validation of the envelope (rows are checked later)."""

from datetime import datetime
from typing import Any

from django.urls import reverse
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from mlsite.api import refuse_unknown_fields
from mlsite.parsers import StrictJSONField

from ..models import Kind, PredictionJob, Status


class IncomingSerializer(serializers.Serializer):
    """A serializer of request data whose fields are built once per class, not per request.

    DRF deep-copies every declared field, validators and all, for each serializer it makes: a
    tenth of a single-job submission's CPU (bench/). The fields of a submission only check
    plain values and never read their parent or its context, so one set serves every request.
    """

    _shared_fields: dict[type, BindingDict] = {}

    @property
    def fields(self) -> BindingDict:  # type: ignore[override]
        fields = self._shared_fields.get(type(self))
        if fields is None:  # two threads may both build it; either set will do
            fields = BindingDict(type(self)())  # bound to an empty one: no request's data kept
            for name, field in self.get_fields().items():
                fields[name] = field
            self._shared_fields[type(self)] = fields
        return fields


IDEMPOTENCY_HELP = (
    "A repeat with the same key returns the first job (200), whatever else it sends; "
    "empty means no key."
)


class SubmitRowsSerializer(IncomingSerializer):
    model = serializers.CharField(max_length=120, help_text="iris, iris@staging or iris:3.")
    inputs = StrictJSONField(required=False, help_text="A list of {feature: number} rows.")
    input = StrictJSONField(required=False, help_text="One {feature: number} row.")
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5)
    idempotency_key = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True, help_text=IDEMPOTENCY_HELP
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        refuse_unknown_fields(self)
        if ("inputs" in attrs) == ("input" in attrs):
            raise serializers.ValidationError({"inputs": ["Give either inputs or input."]})
        attrs["one"] = "input" in attrs  # its errors are named input.x, not inputs[0].x
        attrs["rows"] = [attrs.pop("input")] if attrs["one"] else attrs.pop("inputs")
        return attrs


class SubmitFileSerializer(IncomingSerializer):
    model = serializers.CharField(max_length=120, help_text="iris, iris@staging or iris:3.")
    file = serializers.FileField(help_text="A CSV (with a header row) or Parquet file.")
    id_column = serializers.CharField(max_length=200, required=False, default="", allow_blank=True)
    priority = serializers.IntegerField(min_value=0, max_value=9, default=5)
    idempotency_key = serializers.CharField(
        max_length=200, required=False, default="", allow_blank=True, help_text=IDEMPOTENCY_HELP
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        refuse_unknown_fields(self)
        return attrs


_TIME = serializers.DateTimeField()


def _time(value: datetime | None) -> str | None:
    """DRF's own rendering of a time: ISO 8601, with Z for UTC."""
    return None if value is None else _TIME.to_representation(value)


class JobSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="model_ref", read_only=True)
    version = serializers.CharField(source="version.ref", read_only=True)
    owner = serializers.CharField(source="owner.get_username", read_only=True)
    progress = serializers.FloatField(read_only=True, help_text="rows_done / rows_total, 0–1.")
    result_url = serializers.SerializerMethodField(help_text="Download, when succeeded.")
    error_file_url = serializers.SerializerMethodField(help_text="Rows that failed, if any.")

    class Meta:
        model = PredictionJob
        fields = [
            "id",
            "kind",
            "status",
            "model",
            "version",
            "owner",
            "priority",
            "rows_total",
            "rows_done",
            "rows_failed",
            "progress",
            "error_code",
            "error_message",
            "attempts",
            "task_id",
            "idempotency_key",
            "id_column",
            "created_at",
            "started_at",
            "finished_at",
            "purged_at",
            "result_url",
            "error_file_url",
        ]
        read_only_fields = fields

    def to_representation(self, instance: PredictionJob) -> dict[str, Any]:
        """Meta.fields, written out: DRF's generic walk builds some twenty field objects per
        job, which cost more CPU than the rest of a submission (bench/). A test holds the two
        to the same answer."""
        job = instance
        return {
            "id": str(job.pk),
            "kind": job.kind,
            "status": job.status,
            "model": job.model_ref,
            "version": job.version.ref,
            "owner": job.owner.get_username(),
            "priority": job.priority,
            "rows_total": job.rows_total,
            "rows_done": job.rows_done,
            "rows_failed": job.rows_failed,
            "progress": job.progress,
            "error_code": job.error_code,
            "error_message": job.error_message,
            "attempts": job.attempts,
            "task_id": job.task_id,
            "idempotency_key": job.idempotency_key,
            "id_column": job.id_column,
            "created_at": _time(job.created_at),
            "started_at": _time(job.started_at),
            "finished_at": _time(job.finished_at),
            "purged_at": _time(job.purged_at),
            "result_url": self.get_result_url(job),
            "error_file_url": self.get_error_file_url(job),
        }

    def get_result_url(self, job: PredictionJob) -> str | None:
        """Where the result is, once there is one: a batch job's as CSV, since one of more
        than MAX_JSON_RESULT_ROWS rows is too large for JSON (the endpoint's default)."""
        if job.status != Status.SUCCEEDED or job.purged_at is not None:
            return None
        path = reverse("job-result", args=[job.pk])
        return self._absolute(f"{path}?format=csv" if job.kind == Kind.BATCH else path)

    def get_error_file_url(self, job: PredictionJob) -> str | None:
        # A failed job has one when none of its rows could be scored (no_rows_scored).
        if job.status not in (Status.SUCCEEDED, Status.FAILED) or not job.error_file:
            return None
        return self._absolute(reverse("job-errors", args=[job.pk]))

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class JobDetailSerializer(JobSerializer):
    """A job with its outputs (small jobs only: a batch job's are in its result file)."""

    outputs = serializers.SerializerMethodField(help_text="One row per input, when succeeded.")

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "outputs"]
        read_only_fields = fields

    def to_representation(self, instance: PredictionJob) -> dict[str, Any]:
        return {**super().to_representation(instance), "outputs": self.get_outputs(instance)}

    def get_outputs(self, job: PredictionJob) -> list[dict[str, Any]] | None:
        return job.outputs if job.kind == Kind.SINGLE else None
