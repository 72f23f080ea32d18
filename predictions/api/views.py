"""The jobs API: who may do it, one domain call, the answer."""

from datetime import UTC, datetime
from typing import Any, cast

import django_filters
from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpResponseBase
from django_filters.fields import IsoDateTimeField
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.mixins import ListModelMixin, RetrieveModelMixin
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from mlsite.api import refuse_body_over
from mlsite.errors import BadInput
from mlsite.parsers import StrictJSONParser

from .. import running, submission, waiting
from ..models import PredictionJob, Status
from . import results
from .serializers import (
    JobDetailSerializer,
    JobSerializer,
    SubmitFileSerializer,
    SubmitRowsSerializer,
)

# What the admin's cancel and retry actions ask of staff (predictions/admin.py).
CHANGE_JOBS_PERMISSION = "predictions.change_predictionjob"


class StorableDateTimeField(IsoDateTimeField):
    """An ISO 8601 time that can be compared with stored ones, which are UTC: 0001-01-01
    at +01:00 falls before year 1 there (the query raised OverflowError, a 500)."""

    def to_python(self, value: Any) -> datetime | None:
        moment = super().to_python(value)
        try:
            return None if moment is None else moment.astimezone(UTC)
        except OverflowError:
            raise ValidationError("Enter a time between years 1 and 9999 in UTC.") from None


class StorableDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = StorableDateTimeField


class JobFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(
        choices=Status.choices, help_text="One status, or several: ?status=failed&status=cancelled."
    )
    model = django_filters.CharFilter(
        method="filter_model", help_text="A model name, or name:N for the jobs of its version N."
    )
    created_after = StorableDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = StorableDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = PredictionJob
        fields = ["status", "model", "kind", "created_after", "created_before"]

    def filter_model(
        self, jobs: QuerySet[PredictionJob], name: str, value: str
    ) -> QuerySet[PredictionJob]:
        model_name, colon, number = value.partition(":")
        # name@staging would match nothing in silence: a stage's version changes over time.
        if "@" in model_name or (colon and not (number.isascii() and number.isdigit())):
            raise BadInput("model must be a model name, or name:N for its version N", field=name)
        jobs = jobs.filter(version__registered_model__name=model_name)
        if not colon:
            return jobs
        return jobs.filter(version__number=int(number))


WAIT = OpenApiParameter(
    "wait",
    {"type": "number", "minimum": 0},
    description="Hold the answer up to this many seconds until the job finishes; 0 answers at "
    "once. More than MAX_WAIT_SECONDS (30 by default) waits that long: capped, not refused.",
)
RESULT_FORMAT = OpenApiParameter(
    "format", OpenApiTypes.STR, enum=["json", "csv", "parquet"], description="Result format."
)
ERRORS_FORMAT = OpenApiParameter(
    "format", OpenApiTypes.STR, enum=["csv", "json"], description="Error rows' format (csv)."
)
ERROR_ROWS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "row": {"type": "integer", "description": "The row's number in the file, from 1."},
            "error": {"type": "string", "description": "Why it could not be scored."},
        },
        "required": ["row", "error"],
        "additionalProperties": {
            "type": "string",
            "description": "The row's id, under the id column's name (or id).",
        },
    },
}
ROWS_EXAMPLE = OpenApiExample(
    "Two iris rows",
    value={
        "model": "iris",
        "inputs": [
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
            {"sepal_length": 6.7, "sepal_width": 3.0, "petal_length": 5.2, "petal_width": 2.3},
        ],
        "priority": 5,
    },
    request_only=True,
    media_type="application/json",
)
JOB_EXAMPLE = OpenApiExample(
    "A succeeded job",
    value={
        "id": "3f1c9a9e-3c52-4a55-9a4e-0d8a2f1f5b7e",
        "kind": "single",
        "status": "succeeded",
        "model": "iris",
        "version": "iris:3",
        "rows_total": 2,
        "rows_done": 2,
        "progress": 1.0,
        "result_url": "http://127.0.0.1:8000/api/v1/jobs/3f1c9a9e-…/result/",
        "outputs": [{"prediction": 0, "probabilities": {"0": 0.98, "1": 0.02, "2": 0.0}}],
    },
    response_only=True,
)
# A raw schema, not a many=True serializer: drf-spectacular takes one of those for a list view
# and documents the page wrapper and the list's filters, which a job's result does not have.
RESULT_ROWS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "prediction": {"description": "The predicted class or value."},
            "probabilities": {
                "type": "object",
                "additionalProperties": {"type": "number"},
                "description": "Per class (classifiers with predict_proba).",
            },
        },
        "required": ["prediction"],
        "additionalProperties": {
            "description": "A batch job's id column, under its name; without one, `row`, the "
            "input row's number as the job's error file numbers rows."
        },
    },
}
OTHERS_JOB = OpenApiResponse(
    description="Another user's job, and staff without predictions.change_predictionjob "
    "(permission_denied)."
)
RESULT_GONE = OpenApiResponse(
    description="Result retention deleted it (result_purged); the job remains."
)


class JobViewSet(ListModelMixin, RetrieveModelMixin, GenericViewSet):
    """Prediction jobs: submit, list, read, wait, cancel, retry, download."""

    queryset = PredictionJob.objects.none()  # for the schema only: get_queryset decides
    parser_classes = [StrictJSONParser, MultiPartParser, FormParser]
    filterset_class = JobFilter
    serializer_class = JobSerializer

    def get_queryset(self) -> QuerySet[PredictionJob]:
        jobs = PredictionJob.objects.select_related("version__registered_model", "owner")
        user = cast(User, self.request.user)  # IsAuthenticated let it through
        return jobs if user.is_staff else jobs.filter(owner=user)

    def get_serializer_class(self) -> type[JobSerializer]:
        return JobSerializer if self.action == "list" else JobDetailSerializer

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Before authentication, whose CSRF check (session users) reads a form body whole.
        if self.action == "create":
            _check_body_size(request, request.content_type.startswith("multipart/"))
        super().initial(request, *args, **kwargs)

    @extend_schema(
        summary="Submit a job: JSON rows (single) or an uploaded CSV/Parquet file (batch)",
        parameters=[WAIT],
        request={
            "application/json": SubmitRowsSerializer,
            "multipart/form-data": SubmitFileSerializer,
        },
        responses={
            201: JobDetailSerializer,
            200: OpenApiResponse(
                JobDetailSerializer, "An earlier job with the same idempotency_key."
            ),
            404: OpenApiResponse(description="No such model or version (unknown_model)."),
            409: OpenApiResponse(
                description="The version is unusable: a worker found its artifact changed or "
                "unreadable (unusable_version)."
            ),
            413: OpenApiResponse(
                description="The body or the file is too large (body_too_large, "
                "file_too_large); more rows than allowed is a 400 (too_many_rows)."
            ),
        },
        examples=[ROWS_EXAMPLE, JOB_EXAMPLE],
    )
    def create(self, request: Request) -> Response:
        wait = _wait_seconds(request)  # a bad wait is refused before any job exists
        user = cast(User, request.user)  # IsAuthenticated let it through
        heard_since = waiting.listening_epoch() if wait else None  # before the job is sent
        incoming: SubmitFileSerializer | SubmitRowsSerializer
        if request.content_type.startswith("multipart/"):
            incoming = SubmitFileSerializer(data=request.data)
            incoming.is_valid(raise_exception=True)
            upload = incoming.validated_data.pop("file")
            job, created = submission.submit_file(
                user, upload=upload, size=upload.size, **_named(incoming)
            )
        else:
            incoming = SubmitRowsSerializer(data=request.data)
            incoming.is_valid(raise_exception=True)
            job, created = submission.submit_rows(user, **_named(incoming))
        job = waiting.wait_until_finished(job, wait, heard_since=heard_since if created else None)
        answer = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return Response(self._render(job), status=answer)

    @extend_schema(parameters=[WAIT], responses=JobDetailSerializer, examples=[JOB_EXAMPLE])
    def retrieve(self, request: Request, pk: str | None = None) -> Response:
        job = waiting.wait_until_finished(self.get_object(), _wait_seconds(request))
        return Response(self._render(job))

    @extend_schema(
        request=None,
        responses={
            200: JobDetailSerializer,
            403: OTHERS_JOB,
            409: OpenApiResponse(description="The job already finished (not_cancellable)."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        return Response(self._render(running.cancel_one(self._changeable_job())))

    @extend_schema(
        request=None,
        responses={
            200: JobDetailSerializer,
            403: OTHERS_JOB,
            409: OpenApiResponse(
                description="Only a failed or cancelled job that still has its inputs can be "
                "retried (not_retryable)."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        return Response(self._render(running.retry_one(self._changeable_job())))

    @extend_schema(
        parameters=[RESULT_FORMAT],
        responses={
            (200, "application/json"): RESULT_ROWS,
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, "application/vnd.apache.parquet"): OpenApiTypes.BINARY,
            400: OpenApiResponse(
                description="A bad ?format=, or a batch result over MAX_JSON_RESULT_ROWS "
                "asked for as JSON (result_too_large): ask for csv or parquet."
            ),
            409: OpenApiResponse(description="The job has not succeeded (result_not_ready)."),
            410: RESULT_GONE,
        },
    )
    @action(
        detail=True,
        renderer_classes=[
            JSONRenderer,
            BrowsableAPIRenderer,
            results.CSVRenderer,
            results.ParquetRenderer,
        ],
    )
    def result(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """?format=json (rows), csv or parquet."""
        job = self.get_object()
        results.check_ready(job)
        wanted = request.accepted_renderer.format
        with results.purged_meanwhile(job):
            if wanted == "csv":
                return results.csv_response(job)
            if wanted == "parquet":
                return results.parquet_response(job)
            return Response(results.json_rows(job))

    @extend_schema(
        parameters=[ERRORS_FORMAT],
        responses={
            (200, "text/csv"): OpenApiTypes.BINARY,
            (200, "application/json"): ERROR_ROWS,
            400: OpenApiResponse(
                description="A bad ?format=, or more failed rows than MAX_JSON_RESULT_ROWS "
                "asked for as JSON (result_too_large): ask for csv."
            ),
            409: OpenApiResponse(
                description="The job has not succeeded, nor failed with an error file "
                "(result_not_ready)."
            ),
            410: RESULT_GONE,
        },
    )
    @action(
        detail=True,
        url_path="errors",
        url_name="errors",
        # CSV first: the error file is what a client gets unless it asks for JSON.
        renderer_classes=[results.CSVRenderer, JSONRenderer, BrowsableAPIRenderer],
    )
    def errors(self, request: Request, pk: str | None = None) -> HttpResponseBase:
        """The rows that could not be scored: row number, id, reason; CSV (the header alone
        when none failed) or ?format=json rows."""
        job = self.get_object()
        results.check_errors_ready(job)
        with results.purged_meanwhile(job):
            if request.accepted_renderer.format == "json":
                return Response(results.error_rows(job))
            return results.errors_response(job)

    # DRF takes any HttpResponseBase here (the file downloads are not Responses); the stubs
    # say Response.
    def finalize_response(  # type: ignore[override]
        self, request: Request, response: HttpResponseBase, *args: Any, **kwargs: Any
    ) -> HttpResponseBase:
        # Errors are JSON even where a CSV or Parquet body was asked for.
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[arg-type]

    def _changeable_job(self) -> PredictionJob:
        """The job, for cancel and retry: staff see every job, but another user's they change
        only with the permission the admin's cancel and retry actions ask for (403 without)."""
        job = self.get_object()
        user = cast(User, self.request.user)
        if job.owner_id != user.pk and not user.has_perm(CHANGE_JOBS_PERMISSION):
            raise PermissionDenied(
                f"Only the job's owner, or staff with the {CHANGE_JOBS_PERMISSION} permission, "
                "may cancel or retry it."
            )
        return job

    def _render(self, job: PredictionJob) -> dict[str, Any]:
        return JobDetailSerializer(job, context=self.get_serializer_context()).data


def _named(incoming: Any) -> dict[str, Any]:
    data = dict(incoming.validated_data)
    data["model_ref"] = data.pop("model")
    return data


def _check_body_size(request: Request, is_file: bool) -> None:
    """Refuse a body that is too large before reading it (413)."""
    form_room = 64 * 1024  # the form's other fields and its boundaries
    refuse_body_over(
        request,
        settings.MAX_UPLOAD_BYTES + form_room if is_file else settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
    )


def _wait_seconds(request: Request) -> float:
    raw = request.query_params.get("wait")
    if raw is None:
        return 0.0
    try:
        seconds = float(raw)
    except ValueError:
        raise BadInput("wait must be a number of seconds", field="wait") from None
    if not 0 <= seconds < float("inf"):
        raise BadInput("wait must be a number of seconds", field="wait")
    return min(seconds, float(settings.MAX_WAIT_SECONDS))
