"""Admin screens for the registry: models, versions (upload, stage actions, verify), history."""

import json
from itertools import islice
from typing import Any, cast

from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import Count, JSONField, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from mlsite import parsers, sending
from mlsite.errors import DomainError

from . import versions
from .models import ModelVersion, RegisteredModel, Stage, StageChange
from .registry_forms import UploadVersionForm
from .tasks import verify_version
from .version_charts import LOWER_IS_BETTER, MAX_SHOWN_METRICS, compare

STAGE_COLOURS = {"production": "#2e7d32", "staging": "#1a6fb0", "archived": "#777", "none": "#999"}
STAGE_BUTTONS = [
    (Stage.PRODUCTION, "Promote to production"),
    (Stage.STAGING, "Move to staging"),
    (Stage.NONE, "Demote (no stage)"),
    (Stage.ARCHIVED, "Archive"),
]


def comparison_html(model: RegisteredModel, highlight: ModelVersion | None = None) -> SafeString:
    context = {"comparison": compare(model, highlight), "lower_is_better": LOWER_IS_BETTER}
    return render_to_string("admin/modelregistry/metrics_comparison.html", context)


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    return f"{size / 1024:.1f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:.1f} MiB"


def _staff(request: HttpRequest) -> User:
    """The signed-in user: the admin lets no anonymous user this far."""
    return cast(User, request.user)


def rollback_models(
    modeladmin: admin.ModelAdmin, request: HttpRequest, models: QuerySet[RegisteredModel]
) -> None:
    done = []
    for model in models:
        try:
            done.append(versions.rollback(model, user=_staff(request), note="admin rollback").ref)
        except DomainError as exc:
            modeladmin.message_user(request, str(exc), messages.WARNING)
    if done:
        modeladmin.message_user(request, f"Rolled back {len(done)} model(s): {', '.join(done)}.")


def pretty_json(value: Any) -> SafeString:
    return format_html("<pre style='margin:0'>{}</pre>", json.dumps(value, indent=2, default=str))


# --- registered models -------------------------------------------------------------------


@admin.register(RegisteredModel)
class RegisteredModelAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "task_kind",
        "production",
        "versions_count",
        "jobs_count",
        "created_at",
    ]
    list_filter = ["task_kind"]
    search_fields = ["name", "description"]
    formfield_overrides = {JSONField: {"form_class": parsers.StrictJSONFormField}}
    actions = ["rollback_selected"]
    readonly_fields = ["metrics_of_all_versions", "created_by", "created_at"]
    fieldsets = [
        (None, {"fields": ["name", "task_kind", "description"]}),
        (
            "Input schema",
            {
                "fields": ["input_schema"],
                "description": "Left empty ([]), the first uploaded estimator sets it. It and "
                "the task kind are fixed once the model has versions, since the versions were "
                "fitted on them.",
            },
        ),
        ("Versions side by side", {"fields": ["metrics_of_all_versions"]}),
        ("Audit", {"fields": ["created_by", "created_at"], "classes": ["collapse"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[RegisteredModel]:
        production = ModelVersion.objects.filter(
            registered_model=OuterRef("pk"), stage=Stage.PRODUCTION
        )
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_versions=Count("versions", distinct=True),
                n_jobs=Count("versions__jobs", distinct=True),
                production_pk=Subquery(production.values("pk")[:1]),
                production_number=Subquery(production.values("number")[:1]),
            )
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return self.readonly_fields
        # The name is in every reference and artifact path, so it is fixed once created;
        # the kind and schema once versions were fitted on them (RegisteredModel.clean).
        fixed = [*self.readonly_fields, "name"]
        if obj.has_versions():
            fixed.append("task_kind")
        if obj.has_fixed_schema():
            fixed.append("input_schema")
        return fixed

    @admin.display(description="production version", ordering="production_number")
    def production(self, model: RegisteredModel) -> str:
        if model.production_pk is None:  # type: ignore[attr-defined]
            return "–"
        url = reverse("admin:modelregistry_modelversion_change", args=[model.production_pk])  # type: ignore[attr-defined]
        return format_html('<a href="{}">v{}</a>', url, model.production_number)  # type: ignore[attr-defined]

    @admin.display(description="versions", ordering="n_versions")
    def versions_count(self, model: RegisteredModel) -> SafeString:
        url = reverse("admin:modelregistry_modelversion_changelist")
        return format_html(
            '<a href="{}?registered_model__id__exact={}">{}</a>',
            url,
            model.pk,
            model.n_versions,  # type: ignore[attr-defined]
        )

    @admin.display(description="prediction jobs", ordering="n_jobs")
    def jobs_count(self, model: RegisteredModel) -> int:
        return model.n_jobs  # type: ignore[attr-defined]

    @admin.display(description="metrics of all versions")
    def metrics_of_all_versions(self, model: RegisteredModel) -> SafeString:
        return comparison_html(model) if model.pk else format_html("<p>{}</p>", "No versions yet.")

    def has_change_versions_permission(self, request: HttpRequest) -> bool:
        """Rolling back moves versions between stages: the versions' change permission."""
        return request.user.has_perm("modelregistry.change_modelversion")

    @admin.action(
        description="Roll back to the previous production version", permissions=["change_versions"]
    )
    def rollback_selected(self, request: HttpRequest, models: QuerySet[RegisteredModel]) -> None:
        rollback_models(self, request, models)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


# --- versions ----------------------------------------------------------------------------


class StageChangeInline(admin.TabularInline):
    model = StageChange
    verbose_name_plural = "stage history"
    fields = ["changed_at", "from_stage", "to_stage", "changed_by", "note"]
    readonly_fields = cast(list[str], fields)  # plain names, no groups
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-changed_at", "-id"]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = [
        "ref_display",
        "stage_badge",
        "is_usable",
        "estimator_name",
        "metrics_summary",
        "size_display",
        "source",
        "created_by",
        "created_at",
    ]
    list_filter = ["stage", "is_usable", "source", "artifact_format", "registered_model"]
    search_fields = ["registered_model__name", "sha256", "estimator_class", "description"]
    list_select_related = ["registered_model", "created_by"]
    date_hierarchy = "created_at"
    actions = [
        "promote_to_production",
        "move_to_staging",
        "demote",
        "archive",
        "rollback_models",
        "verify_in_worker",
    ]
    inlines = [StageChangeInline]
    readonly_fields = [
        "registered_model",
        "number",
        "stage",
        "is_usable",
        "unusable_reason",
        "artifact_name",
        "artifact_format",
        "sha256",
        "size_display",
        "estimator_class",
        "library_versions_display",
        "metrics_display",
        "params_display",
        "metrics_of_all_versions",
        "source",
        "created_by",
        "created_at",
    ]
    fieldsets = [
        (None, {"fields": ["registered_model", "number", "stage", "description"]}),
        ("Health", {"fields": ["is_usable", "unusable_reason"]}),
        (
            "Artifact",
            {
                "fields": [
                    "artifact_name",
                    "artifact_format",
                    "sha256",
                    "size_display",
                    "estimator_class",
                    "library_versions_display",
                ]
            },
        ),
        ("Evaluation", {"fields": ["metrics_display", "params_display"]}),
        ("All versions of this model", {"fields": ["metrics_of_all_versions"]}),
        ("Audit", {"fields": ["source", "created_by", "created_at"]}),
    ]
    add_fieldsets = [
        (None, {"fields": ["existing_model", "new_model_name"]}),
        (None, {"fields": ["artifact_file", "upload_format", "version_description"]}),
    ]

    # The add page is the upload form.

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else self.readonly_fields

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list:
        return [] if obj is None else super().get_inline_instances(request, obj)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        if obj is None:
            kwargs["form"] = UploadVersionForm
        # The form class is made per request; UploadVersionForm reads these two attributes.
        form: Any = super().get_form(request, obj, change, **kwargs)
        form.user = request.user
        form.may_create_models = request.user.has_perm("modelregistry.add_registeredmodel")
        return form

    def response_post_save_add(self, request: HttpRequest, obj: Any) -> HttpResponseRedirect:
        """After an upload, show the new version (its hash, schema fit and metrics) to whoever
        may see it; else Django's own answer (the versions list, or the admin index).

        Django's response_add around this says "added successfully". Sending everyone to the
        version's page sent staff with only "Can add model version" to a 403.
        """
        if self.has_view_or_change_permission(request, obj):
            return HttpResponseRedirect(
                reverse("admin:modelregistry_modelversion_change", args=[obj.pk])
            )
        return super().response_post_save_add(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # jobs and the audit trail point at versions: archive instead

    # Columns and read-only fields.

    @admin.display(description="version", ordering="registered_model__name")
    def ref_display(self, version: ModelVersion) -> str:
        return version.ref

    @admin.display(description="stage", ordering="stage")
    def stage_badge(self, version: ModelVersion) -> SafeString:
        colour = STAGE_COLOURS.get(version.stage, "#999")
        return format_html(
            '<span style="color:#fff;background:{};padding:1px 6px;border-radius:3px">{}</span>',
            colour,
            version.get_stage_display(),
        )

    @admin.display(description="estimator", ordering="estimator_class")
    def estimator_name(self, version: ModelVersion) -> str:
        return version.estimator_class.rsplit(".", 1)[-1]

    @admin.display(description="metrics")
    def metrics_summary(self, version: ModelVersion) -> str:
        shown = [f"{k} {v:.3g}" for k, v in version.metrics.items() if isinstance(v, int | float)]
        return ", ".join(shown[:3]) or "–"

    @admin.display(description="artifact")
    def artifact_name(self, version: ModelVersion) -> str:
        # Its name, not Django's link to it: artifacts are not served, so the link was a 404.
        return version.artifact.name or "–"

    @admin.display(description="size", ordering="size")
    def size_display(self, version: ModelVersion) -> str:
        return human_size(version.size)

    @admin.display(description="library versions")
    def library_versions_display(self, version: ModelVersion) -> SafeString:
        return pretty_json(version.library_versions)

    @admin.display(description="metrics")
    def metrics_display(self, version: ModelVersion) -> SafeString:
        shown = dict(islice(version.metrics.items(), MAX_SHOWN_METRICS))
        hidden = len(version.metrics) - len(shown)
        if not hidden:
            return pretty_json(shown)
        more = format_html("<p class='help'>… and {} more metrics, not shown.</p>", hidden)
        return format_html("{}{}", pretty_json(shown), more)

    @admin.display(description="params")
    def params_display(self, version: ModelVersion) -> SafeString:
        return pretty_json(version.params)

    @admin.display(description="metrics of all versions")
    def metrics_of_all_versions(self, version: ModelVersion) -> SafeString:
        return comparison_html(version.registered_model, highlight=version)

    # Stage actions: each calls versions.promote and reports what happened.

    def _move_all(self, request: HttpRequest, selected: QuerySet[ModelVersion], stage: str) -> None:
        count = selected.count()  # before the moves take them out of a "stage" filter's list
        moved = 0
        for version in selected.select_related("registered_model"):
            try:
                before = version.stage
                if versions.promote(version, stage, user=_staff(request)).stage != before:
                    moved += 1
            except DomainError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        label = Stage(stage).label.lower()
        self.message_user(request, f"Moved {moved} of {count} version(s) to {label}.")

    @admin.action(
        description="Promote to production (archives the current one)", permissions=["change"]
    )
    def promote_to_production(self, request: HttpRequest, selected: QuerySet[ModelVersion]) -> None:
        if selected.values("registered_model").distinct().count() < len(selected):
            self.message_user(
                request, "Select at most one version per model to promote.", messages.ERROR
            )
            return
        self._move_all(request, selected, Stage.PRODUCTION)

    @admin.action(description="Move to staging", permissions=["change"])
    def move_to_staging(self, request: HttpRequest, selected: QuerySet[ModelVersion]) -> None:
        self._move_all(request, selected, Stage.STAGING)

    @admin.action(description="Demote (no stage)", permissions=["change"])
    def demote(self, request: HttpRequest, selected: QuerySet[ModelVersion]) -> None:
        self._move_all(request, selected, Stage.NONE)

    @admin.action(description="Archive", permissions=["change"])
    def archive(self, request: HttpRequest, selected: QuerySet[ModelVersion]) -> None:
        self._move_all(request, selected, Stage.ARCHIVED)

    @admin.action(
        description="Roll back these versions' models to their previous production",
        permissions=["change"],
    )
    def rollback_models(self, request: HttpRequest, selected: QuerySet[ModelVersion]) -> None:
        rollback_models(
            self, request, RegisteredModel.objects.filter(versions__in=selected).distinct()
        )

    @admin.action(description="Verify in a worker (sha256 and safe load)", permissions=["change"])
    def verify_in_worker(self, request: HttpRequest, selected: QuerySet[ModelVersion]) -> None:
        try:
            for version in selected:
                _send_to_verify(version)
        except sending.BrokerUnavailable as exc:
            self.message_user(request, _not_sent(exc), messages.ERROR)
            return
        self.message_user(
            request,
            f"Sent {len(selected)} version(s) to a worker to verify; an artifact that fails is "
            "marked unusable (reload this page to see).",
        )

    # Buttons on a version's page.

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<int:pk>/stage/", view(self.stage_view), name="modelregistry_modelversion_stage"),
            path(
                "<int:pk>/verify/", view(self.verify_view), name="modelregistry_modelversion_verify"
            ),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        extra_context = {**(extra_context or {}), "stage_buttons": STAGE_BUTTONS}
        return super().change_view(request, object_id, form_url, extra_context)

    def stage_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = self._version_for_post(request, pk)
        if isinstance(version, HttpResponse):
            return version
        try:
            moved = versions.promote(version, request.POST.get("stage", ""), user=_staff(request))
            # Not "iris:2 is now …": the admin capitalises a message's first letter.
            self.message_user(request, f"Moved {moved.ref} to {moved.get_stage_display().lower()}.")
        except DomainError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        return HttpResponseRedirect(reverse("admin:modelregistry_modelversion_change", args=[pk]))

    def verify_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        version = self._version_for_post(request, pk)
        if isinstance(version, HttpResponse):
            return version
        try:
            _send_to_verify(version)
            self.message_user(request, f"Sent {version.ref} to a worker to verify.")
        except sending.BrokerUnavailable as exc:
            self.message_user(request, _not_sent(exc), messages.ERROR)
        return HttpResponseRedirect(reverse("admin:modelregistry_modelversion_change", args=[pk]))

    def _version_for_post(self, request: HttpRequest, pk: int) -> ModelVersion | HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        version = get_object_or_404(ModelVersion.objects.select_related("registered_model"), pk=pk)
        if not self.has_change_permission(request, version):
            return HttpResponseRedirect(reverse("admin:index"))
        return version


def _send_to_verify(version: ModelVersion) -> None:
    """Raises sending.BrokerUnavailable, within the socket timeout, when Redis does not answer
    (Celery's .delay() raised kombu's OperationalError after its retries: a 500)."""
    sending.publish(verify_version.name, args=[version.pk])


def _not_sent(exc: Exception) -> str:
    return f"Not sent: could not reach the broker ({exc}); try again shortly."
