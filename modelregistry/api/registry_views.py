"""Registry endpoints: read models and versions; staff upload, promote and roll back."""

from typing import Any, cast

import django_filters
from django.conf import settings
from django.contrib.auth.models import User
from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.mixins import ListModelMixin, RetrieveModelMixin
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import BasePermission, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet, ReadOnlyModelViewSet

from mlsite.api import refuse_body_over, staff_with
from mlsite.parsers import StrictJSONParser

from .. import versions
from ..models import ModelVersion, RegisteredModel, Stage, TaskKind
from .registry_serializers import (
    ModelVersionDetailSerializer,
    ModelVersionSerializer,
    PromoteSerializer,
    RegisteredModelSerializer,
    RollbackSerializer,
    UploadSerializer,
)

UPLOAD_PERMISSION = "modelregistry.add_modelversion"
CREATE_MODEL_PERMISSION = "modelregistry.add_registeredmodel"
PROMOTE_PERMISSION = "modelregistry.change_modelversion"


def _signed_in(request: Request) -> User:
    """The user of a request that IsAuthenticated let through."""
    return cast(User, request.user)


def registered_models() -> QuerySet[RegisteredModel]:
    production = ModelVersion.objects.filter(
        registered_model=OuterRef("pk"), stage=Stage.PRODUCTION
    ).values("number")[:1]
    return RegisteredModel.objects.annotate(
        versions_count=Count("versions"), production_version=Subquery(production)
    ).order_by("name")


class RegisteredModelFilter(django_filters.FilterSet):
    task_kind = django_filters.ChoiceFilter(
        choices=TaskKind.choices, help_text="Only classification, or only regression, models."
    )
    search = django_filters.CharFilter(
        method="filter_search",
        max_length=100,
        help_text="Models whose name or description contains this (any case).",
    )

    class Meta:
        model = RegisteredModel
        fields = ["task_kind", "search"]

    def filter_search(
        self, models: QuerySet[RegisteredModel], name: str, value: str
    ) -> QuerySet[RegisteredModel]:
        return models.filter(Q(name__icontains=value) | Q(description__icontains=value))


class ModelVersionFilter(django_filters.FilterSet):
    stage = django_filters.MultipleChoiceFilter(
        choices=Stage.choices, help_text="One stage, or several: ?stage=production&stage=staging."
    )

    class Meta:
        model = ModelVersion
        fields = ["stage"]


class RegisteredModelViewSet(ReadOnlyModelViewSet):
    """Models: everyone signed in reads; staff with the promote permission roll back."""

    serializer_class = RegisteredModelSerializer
    lookup_field = "name"
    lookup_value_regex = r"[-\w]+"
    queryset = registered_models()
    filterset_class = RegisteredModelFilter

    def get_permissions(self) -> list[BasePermission]:
        if self.action == "rollback":
            return [IsAuthenticated(), staff_with(PROMOTE_PERMISSION)()]
        return cast(list[BasePermission], super().get_permissions())  # instances of the classes

    @extend_schema(
        request=RollbackSerializer,
        responses={
            200: ModelVersionDetailSerializer,
            409: OpenApiResponse(
                description="No earlier production version to roll back to, or it is "
                "unusable (stage_conflict)."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, name: str) -> Response:
        incoming = RollbackSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        model = get_object_or_404(RegisteredModel, name=name)
        version = versions.rollback(model, user=_signed_in(request), **incoming.validated_data)
        return Response(ModelVersionDetailSerializer(version).data)


MODEL_NAME = OpenApiParameter("model_name", OpenApiTypes.STR, OpenApiParameter.PATH)
NUMBER = OpenApiParameter("number", OpenApiTypes.INT, OpenApiParameter.PATH)


@extend_schema_view(
    list=extend_schema(parameters=[MODEL_NAME]),
    retrieve=extend_schema(parameters=[MODEL_NAME, NUMBER]),
)
class ModelVersionViewSet(ListModelMixin, RetrieveModelMixin, GenericViewSet):
    """A model's versions: read for everyone signed in; upload and promote for staff."""

    queryset = ModelVersion.objects.none()  # for the schema only: get_queryset decides
    lookup_field = "number"
    filterset_class = ModelVersionFilter
    parser_classes = [StrictJSONParser, MultiPartParser, FormParser]

    def get_queryset(self) -> QuerySet[ModelVersion]:
        model = get_object_or_404(RegisteredModel, name=self.kwargs["model_name"])
        return model.versions.select_related("registered_model", "created_by").order_by("-number")

    def get_serializer_class(self) -> type:
        return ModelVersionSerializer if self.action == "list" else ModelVersionDetailSerializer

    def get_permissions(self) -> list[BasePermission]:
        if self.action == "create":
            return [IsAuthenticated(), staff_with(UPLOAD_PERMISSION)()]
        if self.action == "promote":
            return [IsAuthenticated(), staff_with(PROMOTE_PERMISSION)()]
        return cast(list[BasePermission], super().get_permissions())  # instances of the classes

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Before authentication, whose CSRF check (session users) reads a form body whole.
        if self.action == "create":
            refuse_body_over(request, settings.MAX_ARTIFACT_BYTES + 64 * 1024)  # and the form
        super().initial(request, *args, **kwargs)

    @extend_schema(
        parameters=[MODEL_NAME],
        request={"multipart/form-data": UploadSerializer},
        responses={201: ModelVersionDetailSerializer},
    )
    def create(self, request: Request, model_name: str) -> Response:
        incoming = UploadSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        is_new = not RegisteredModel.objects.filter(name=model_name).exists()
        if is_new and not request.user.has_perm(CREATE_MODEL_PERMISSION):
            raise PermissionDenied(
                f"Creating a model needs the {CREATE_MODEL_PERMISSION} permission."
            )
        data = incoming.validated_data
        version = versions.upload(
            model_name,
            data["file"],
            artifact_format=data["format"],
            created_by=_signed_in(request),
            description=data["description"],
            metrics=data.get("metrics"),
        )
        return Response(ModelVersionDetailSerializer(version).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[MODEL_NAME, NUMBER],
        request=PromoteSerializer,
        responses={
            200: ModelVersionDetailSerializer,
            409: OpenApiResponse(
                description="The version is unusable, or another promotion won (stage_conflict)."
            ),
        },
    )
    @action(detail=True, methods=["post"])
    def promote(self, request: Request, model_name: str, number: str) -> Response:
        incoming = PromoteSerializer(data=request.data)
        incoming.is_valid(raise_exception=True)
        version = versions.promote(
            self.get_object(), user=_signed_in(request), **incoming.validated_data
        )
        return Response(ModelVersionDetailSerializer(version).data)
