"""Admin screens for training: datasets, specs (retrain now, schedule, chart) and runs."""

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import AdminFileWidget
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from mlsite import parsers, uploads
from mlsite.errors import DomainError

from . import scheduling, training, training_runs
from .models import Dataset, RunStatus, RunTrigger, TrainingRun, TrainingSpec
from .training_charts import metric_chart

CHART_RUNS = 30
SCHEDULE_REFUSED = (
    "Scheduling takes the “Can add periodic task” permission of Periodic tasks "
    "(django-celery-beat): ask an administrator for it."
)
STATUS_COLOURS: dict[str, str] = {
    RunStatus.QUEUED: "#777",
    RunStatus.RUNNING: "#1a6fb0",
    RunStatus.SUCCEEDED: "#2e7d32",
    RunStatus.FAILED: "#c62828",
    RunStatus.CANCELLED: "#8d6e63",
}


def _field_error(form: forms.ModelForm, exc: DomainError) -> None:
    form.add_error(exc.field if exc.field in form.fields else None, str(exc))


# --- datasets --------------------------------------------------------------------------


class StoredFileInput(AdminFileWidget):
    """The admin's file input, naming the stored file without linking to it: stored files
    are not served (MEDIA is private), so Django's link was a 404."""

    template_name = "modelregistry/widgets/stored_file_input.html"


class DatasetForm(forms.ModelForm):
    class Meta:
        model = Dataset
        fields = ["name", "description", "builtin", "file", "target_column"]
        widgets = {"file": StoredFileInput}

    def clean(self) -> dict[str, Any]:
        data = cast(dict[str, Any], super().clean())  # ModelForm.clean returns cleaned_data
        builtin, upload = data.get("builtin"), data.get("file")
        # On the field, not the form: a field with an error is left out of the model's
        # constraint check, which would add its raw "dataset_is_builtin_or_file" message.
        if not builtin and not upload:
            self.add_error("builtin", "Choose a built-in dataset or upload a file.")
        elif builtin and upload:
            self.add_error("builtin", "Choose a built-in dataset or upload a file, not both.")
        if upload and hasattr(upload, "read"):
            try:
                training.check_dataset_file(upload, upload.name, data.get("target_column", ""))
            except training.BadDataset as exc:
                _field_error(self, exc)
        return data

    def full_clean(self) -> None:
        super().full_clean()
        uploads.ask_for_the_file_again(self, "file")


@admin.register(Dataset)
class DatasetAdmin(admin.ModelAdmin):
    form = DatasetForm
    list_display = ["name", "source", "target_column", "created_at"]
    list_filter = ["builtin"]
    search_fields = ["name", "description"]
    fieldsets = [
        (None, {"fields": ["name", "description"]}),
        (
            "Data",
            {
                "fields": ["builtin", "file", "target_column"],
                "description": "Either a dataset that ships with scikit-learn (works offline), "
                "or a CSV/Parquet file whose target column you name.",
            },
        ),
    ]

    @admin.display(description="source")
    def source(self, dataset: Dataset) -> str | None:
        return (
            f"built-in: {dataset.get_builtin_display()}" if dataset.builtin else dataset.file.name
        )


# --- specs -----------------------------------------------------------------------------


class TrainingSpecForm(forms.ModelForm):
    class Meta:
        model = TrainingSpec
        fields = [
            "name",
            "registered_model",
            "dataset",
            "estimator",
            "params",
            "holdout_share",
            "seed",
            "primary_metric",
            "promotion_policy",
            "timezone",
        ]
        field_classes = {"params": parsers.StrictJSONFormField}

    def clean(self) -> dict[str, Any]:
        data = cast(dict[str, Any], super().clean())  # ModelForm.clean returns cleaned_data
        try:
            scheduling.zone_of(data.get("timezone") or "")
            if (
                data.get("registered_model")
                and data.get("estimator")
                and data.get("primary_metric")
            ):
                training.check_spec(TrainingSpec(**data))
        except DomainError as exc:
            _field_error(self, exc)
        return data


@admin.register(TrainingSpec)
class TrainingSpecAdmin(admin.ModelAdmin):
    form = TrainingSpecForm
    change_form_template = "admin/modelregistry/trainingspec/change_form.html"
    list_display = [
        "name",
        "registered_model",
        "dataset",
        "estimator",
        "primary_metric",
        "promotion_policy",
        "schedule",
        "last_run",
    ]
    list_filter = ["estimator", "promotion_policy", "primary_metric", "registered_model"]
    search_fields = ["name", "registered_model__name", "dataset__name"]
    list_select_related = [
        "registered_model",
        "dataset",
        "periodic_task__crontab",
        "periodic_task__interval",
    ]
    readonly_fields = ["schedule", "next_runs", "metric_history", "recent_runs"]
    actions = ["retrain_selected"]
    fieldsets = [
        ("What to train", {"fields": ["name", "registered_model", "dataset"]}),
        (
            "Estimator",
            {
                "fields": ["estimator", "params"],
                "description": "Params are checked against the estimator: unknown names or "
                "out-of-range values are refused here, before any run.",
            },
        ),
        (
            "Evaluation and promotion",
            {"fields": ["holdout_share", "seed", "primary_metric", "promotion_policy"]},
        ),
        ("Schedule", {"fields": ["timezone", "schedule", "next_runs"]}),
        ("History", {"fields": ["metric_history", "recent_runs"]}),
    ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # "Schedule…" only for those it serves: others were sent to the admin's index.
        extra_context = {**(extra_context or {}), "may_schedule": _may_schedule(request)}
        return super().change_view(request, object_id, form_url, extra_context)

    def get_urls(self) -> list[URLPattern]:
        own = [
            path(
                "<int:spec_id>/retrain/",
                self.admin_site.admin_view(self.retrain_view),
                name="modelregistry_trainingspec_retrain",
            ),
            path(
                "<int:spec_id>/schedule/",
                self.admin_site.admin_view(self.schedule_view),
                name="modelregistry_trainingspec_schedule",
            ),
        ]
        return own + super().get_urls()

    @admin.display(description="schedule")
    def schedule(self, spec: TrainingSpec) -> SafeString | str:
        if spec.periodic_task is None:
            # The button is only there for staff who may add periodic tasks.
            return "not scheduled (“Schedule…” above, for staff who may add periodic tasks)"
        url = reverse("admin:django_celery_beat_periodictask_change", args=[spec.periodic_task.pk])
        return format_html('<a href="{}">{}</a>', url, scheduling.describe(spec.periodic_task))

    @admin.display(description="next planned runs")
    def next_runs(self, spec: TrainingSpec) -> SafeString | str:
        times = scheduling.next_run_times(spec) if spec.pk else []
        if not times:
            return "none planned"
        # Seconds only where they say something: an interval under a minute, or one counted
        # from a last run; at minute precision a 30 s interval showed each minute twice.
        shape = (
            "%a %Y-%m-%d %H:%M:%S %Z" if any(at.second for at in times) else "%a %Y-%m-%d %H:%M %Z"
        )
        return format_html_join("", "<div>{}</div>", ((at.strftime(shape),) for at in times))

    @admin.display(description="last run")
    def last_run(self, spec: TrainingSpec) -> SafeString | str:
        run = spec.runs.first()
        if run is None:
            return "–"
        value = run.metrics.get(spec.primary_metric)
        shown = f" {value:.4f}" if isinstance(value, int | float) else ""
        return format_html("{}{}{}", _status(run), shown, " ↑ promoted" if run.promoted else "")

    @admin.display(description="primary metric over runs")
    def metric_history(self, spec: TrainingSpec) -> SafeString | str:
        if not spec.pk:
            return "–"
        finished = spec.runs.filter(status=RunStatus.SUCCEEDED).order_by("-created_at")
        return metric_chart(list(reversed(finished[:CHART_RUNS])), spec.primary_metric)

    @admin.display(description="recent runs")
    def recent_runs(self, spec: TrainingSpec) -> SafeString | str:
        runs = spec.runs.select_related("version__registered_model")[:10] if spec.pk else []
        rows = [
            (
                reverse("admin:modelregistry_trainingrun_change", args=[run.pk]),
                run.pk,
                run.get_status_display(),
                run.created_at.strftime("%Y-%m-%d %H:%M"),
                run.version.ref if run.version else "–",
                "promoted" if run.promoted else "",
                run.promotion_reason or run.error,
            )
            for run in runs
        ]
        if not rows:
            return "no runs yet"
        body = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td><td>{}</td></tr>",
            rows,
        )
        return format_html("<table>{}</table>", body)

    @admin.action(description="Retrain now", permissions=["change"])
    def retrain_selected(self, request: HttpRequest, specs: QuerySet[TrainingSpec]) -> None:
        queued, busy, unsent = 0, [], []
        for spec in specs:
            try:
                training_runs.request_run(spec, RunTrigger.ADMIN)
                queued += 1
            except training_runs.TrainingInProgress:
                busy.append(spec.name)
            except training_runs.RunNotSent as exc:
                unsent.append(str(exc))
        self.message_user(request, f"Queued {queued} of {len(specs)} spec(s) for retraining.")
        if busy:
            self.message_user(request, f"Already running: {', '.join(busy)}.", messages.WARNING)
        for reason in unsent:
            self.message_user(request, reason, messages.ERROR)

    def retrain_view(self, request: HttpRequest, spec_id: int) -> HttpResponse:
        spec = get_object_or_404(TrainingSpec, pk=spec_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request, spec):
            return HttpResponseRedirect(reverse("admin:index"))
        try:
            run = training_runs.request_run(spec, RunTrigger.ADMIN)
            self.message_user(request, f"Run {run.pk} of {spec.name} queued.")
        except training_runs.TrainingInProgress as exc:
            self.message_user(request, str(exc), messages.WARNING)
        except training_runs.RunNotSent as exc:
            self.message_user(request, str(exc), messages.ERROR)
        return HttpResponseRedirect(
            reverse("admin:modelregistry_trainingspec_change", args=[spec.pk])
        )

    def schedule_view(self, request: HttpRequest, spec_id: int) -> HttpResponse:
        spec = get_object_or_404(TrainingSpec.objects.select_related("periodic_task"), pk=spec_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request, spec):
            self.message_user(request, "You may not schedule specs.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:index"))
        if not _may_schedule(request):
            self.message_user(request, SCHEDULE_REFUSED, messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:modelregistry_trainingspec_change", args=[spec.pk])
            )
        existed = spec.periodic_task is not None
        try:
            task = scheduling.ensure_schedule(spec)
        except DomainError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:modelregistry_trainingspec_change", args=[spec.pk])
            )
        if not existed:
            self.message_user(
                request,
                f"Scheduled {spec.name} nightly at 02:00 ({spec.timezone}). "
                "Change the crontab or pick an interval here.",
            )
        return HttpResponseRedirect(
            reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
        )


def _may_schedule(request: HttpRequest) -> bool:
    """A schedule is a django-celery-beat periodic task, made if missing."""
    return request.user.has_perm("django_celery_beat.add_periodictask")


# --- runs ------------------------------------------------------------------------------


def _status(run: TrainingRun) -> SafeString:
    colour = STATUS_COLOURS.get(run.status, "#777")
    return format_html('<b style="color:{}">{}</b>', colour, run.get_status_display())


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "trigger",
        "status_badge",
        "primary_value",
        "production_value",
        "promoted",
        "why",
        "version",
        "created_at",
        "duration",
    ]
    list_filter = ["status", "trigger", "promoted", "spec"]
    search_fields = ["spec__name", "error", "promotion_reason"]
    list_select_related = ["spec", "version__registered_model"]
    date_hierarchy = "created_at"
    fieldsets = [
        (None, {"fields": ["spec", "trigger", "status", "task_id"]}),
        ("Outcome", {"fields": ["version", "metrics", "production_metrics", "promoted"]}),
        ("Why", {"fields": ["promotion_reason", "error"]}),
        ("When", {"fields": ["created_at", "started_at", "finished_at"]}),
    ]

    actions = ["cancel_selected"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in TrainingRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are started from a spec: "Retrain now", a schedule or the API

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        """Who may start a run may cancel one."""
        return request.user.has_perm("modelregistry.change_trainingspec")

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_selected(self, request: HttpRequest, runs: QuerySet[TrainingRun]) -> None:
        selected = runs.count()  # before the cancel takes them out of a "status" filter's list
        cancelled = training_runs.cancel(runs, by=request.user.get_username())
        skipped = selected - cancelled
        why = f" {skipped} had already finished, so there was nothing to cancel." if skipped else ""
        level = messages.WARNING if skipped else messages.SUCCESS
        self.message_user(request, f"Cancelled {cancelled} of {selected} run(s).{why}", level)

    @admin.display(description="status", ordering="status")
    def status_badge(self, run: TrainingRun) -> SafeString:
        return _status(run)

    @admin.display(description="new")
    def primary_value(self, run: TrainingRun) -> str:
        return _metric(run.metrics, run)

    @admin.display(description="production")
    def production_value(self, run: TrainingRun) -> str:
        return _metric(run.production_metrics, run)

    @admin.display(description="why")
    def why(self, run: TrainingRun) -> str:
        text = run.error or run.promotion_reason
        return text if len(text) <= 90 else text[:89] + "…"

    @admin.display(description="took")
    def duration(self, run: TrainingRun) -> str:
        if not (run.started_at and run.finished_at):
            return "–"
        return f"{(run.finished_at - run.started_at).total_seconds():.1f} s"


def _metric(metrics: dict[str, Any], run: TrainingRun) -> str:
    name = run.spec.primary_metric if run.spec else None
    value = metrics.get(name) if name else None
    return f"{name} {value:.4f}" if isinstance(value, int | float) else "–"
