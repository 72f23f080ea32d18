"""Training endpoints: everyone signed in reads specs and runs; staff who may change a spec
start and cancel runs."""

from typing import cast

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import ReadOnlyModelViewSet

from mlsite.api import staff_with

from .. import training_runs
from ..models import RunTrigger, TrainingRun, TrainingSpec
from .training_serializers import TrainingRunSerializer, TrainingSpecSerializer

RUN_PERMISSION = "modelregistry.change_trainingspec"


class TrainingSpecViewSet(ReadOnlyModelViewSet):
    """What each spec trains, how it decides promotion, and when it runs next."""

    serializer_class = TrainingSpecSerializer
    queryset = TrainingSpec.objects.select_related(
        "registered_model", "dataset", "periodic_task__crontab", "periodic_task__interval"
    )

    def get_permissions(self) -> list[BasePermission]:
        if self.action == "run":
            return [IsAuthenticated(), staff_with(RUN_PERMISSION)()]
        return cast(list[BasePermission], super().get_permissions())  # instances of the classes

    @extend_schema(
        request=None,
        responses={
            202: TrainingRunSerializer,
            409: OpenApiResponse(
                description="A run of the spec is already queued or running (training_in_progress)."
            ),
            503: OpenApiResponse(
                description="The broker did not take the run's message (broker_unavailable); the "
                "run is recorded as failed, saying so."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str | None = None) -> Response:
        """Queue a run of the spec now: staff with "Can change training spec" (409 while one
        is queued or running)."""
        run = training_runs.request_run(self.get_object(), RunTrigger.API)
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class TrainingRunViewSet(ReadOnlyModelViewSet):
    """Every run: its status, metrics, the version it made, and whether it was promoted."""

    serializer_class = TrainingRunSerializer
    filterset_fields = ["spec", "status", "trigger", "promoted"]

    def get_queryset(self) -> QuerySet[TrainingRun]:
        return TrainingRun.objects.select_related("spec", "version__registered_model")

    def get_permissions(self) -> list[BasePermission]:
        if self.action == "cancel":
            return [IsAuthenticated(), staff_with(RUN_PERMISSION)()]
        return cast(list[BasePermission], super().get_permissions())

    @extend_schema(
        request=None,
        responses={
            200: TrainingRunSerializer,
            409: OpenApiResponse(description="The run already finished (not_cancellable)."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel a queued or running run: staff with "Can change training spec". A running
        fit is stopped; the version it would have made is not registered."""
        run = training_runs.cancel_one(self.get_object(), by=request.user.get_username())
        return Response(TrainingRunSerializer(run).data)
