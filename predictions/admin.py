"""The jobs screens: browse, follow progress, cancel, retry, and submit a job as staff."""

import json
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django_celery_results.models import TaskResult

from mlsite import parsers, uploads
from mlsite.errors import DomainError

from . import inputs, running, submission
from .models import BatchChunk, PredictionJob, Status

PREVIEW_ROWS = 20
CHANGE_JOBS = "predictions.change_predictionjob"
CHANGE_JOBS_HELP = "changing others' jobs takes the “Can change prediction job” permission."
STATUS_COLOURS: dict[str, str] = {
    Status.QUEUED: "#777",
    Status.RUNNING: "#2a6ebb",
    Status.SUCCEEDED: "#2e7d32",
    Status.FAILED: "#c62828",
    Status.CANCELLED: "#8d6e63",
}


class SubmitJobForm(forms.ModelForm):
    """Staff submit a job: a model reference, then JSON rows or a CSV/Parquet file."""

    model_ref = forms.CharField(
        label="model",
        max_length=120,
        help_text="A model name (its production version), name@staging or name:3.",
    )
    rows = forms.CharField(
        label="rows (JSON)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 80}),
        help_text='A list of rows, e.g. [{"sepal_length": 5.1, "sepal_width": 3.5, …}].',
    )
    upload = forms.FileField(
        label="or a file",
        required=False,
        help_text="A CSV with a header row, or a Parquet file, for a batch job.",
    )
    id_column = forms.CharField(
        label="id column",
        required=False,
        max_length=200,
        help_text="A column of the file carried through to the result.",
    )
    priority = forms.IntegerField(
        min_value=0, max_value=9, initial=5, help_text="0 (lowest) to 9 (highest)."
    )

    class Meta:
        model = PredictionJob
        fields: list[str] = []

    def clean(self) -> dict[str, Any]:
        # ModelForm.clean returns cleaned_data; the stubs allow None for overrides.
        data = cast(dict[str, Any], super().clean())
        if "upload" in self.errors:
            return data  # e.g. an empty file: its own error says so
        if bool(data.get("rows")) == bool(data.get("upload")):
            raise forms.ValidationError("Paste JSON rows or upload a file (one of the two).")
        if "model_ref" in self.errors:
            return data  # left blank: "This field is required." says so, not "'' is not a model"
        try:
            version = submission.usable_version(data.get("model_ref", ""))
            model = version.registered_model
            if data.get("rows"):
                # Parsed as the API parses a body: depth, huge numbers and NaN are refused.
                rows = parsers.parse_text(data["rows"])
                data["parsed_rows"] = inputs.check_rows(model, rows)
            else:
                upload = data["upload"]
                inputs.check_file(model, upload, upload.size, data.get("id_column", ""))
        except parsers.BadJSON as exc:
            self.add_error("rows", str(exc))
        except DomainError as exc:
            self.add_error(_form_field(exc.field), str(exc))
        return data

    def full_clean(self) -> None:
        super().full_clean()
        uploads.ask_for_the_file_again(self, "upload")


@admin.register(PredictionJob)
class PredictionJobAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "coloured_status",
        "model_at_version",
        "owner",
        "kind",
        "progress_bar",
        "duration",
        "created_at",
    ]
    list_filter = ["status", "kind", "version__registered_model", "created_at"]
    search_fields = ["id", "owner__username", "model_ref", "error_code", "task_id"]
    date_hierarchy = "created_at"
    list_select_related = ["version__registered_model", "owner"]
    list_per_page = 50
    actions = ["cancel_selected", "retry_selected"]
    fieldsets = [
        ("Job", {"fields": ["id", "status", "kind", "owner", "model_at_version", "priority"]}),
        (
            "Progress",
            {
                "fields": [
                    "progress_bar",
                    "rows_total",
                    "rows_done",
                    "rows_failed",
                    "attempts",
                    "created_at",
                    "enqueued_at",
                    "started_at",
                    "finished_at",
                    "duration",
                ]
            },
        ),
        ("Inputs", {"fields": ["inputs_preview", "input_file_name", "id_column"]}),
        ("Result", {"fields": ["outputs_preview", "result_link", "error_link"]}),
        ("Error", {"fields": ["error_code", "error_message"]}),
        (
            "Worker",
            {
                "classes": ["collapse"],
                "fields": ["task_result_link", "artifact_sha256", "idempotency_key", "chunks"],
            },
        ),
    ]
    add_fieldsets = [
        (None, {"fields": ["model_ref", "rows", "upload", "id_column", "priority"]}),
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        # Every fieldset above lists plain field names (no nested groups).
        return [cast(str, field) for _, options in self.fieldsets for field in options["fields"]]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        if obj is None:
            kwargs["form"] = SubmitJobForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        """Only adds reach here: a submission through the same functions as the API."""
        data = form.cleaned_data
        user = cast(User, request.user)  # the admin only lets signed-in staff in
        if data.get("upload"):
            upload = data["upload"]
            job, _ = submission.submit_file(
                user,
                data["model_ref"],
                upload,
                size=upload.size,
                id_column=data.get("id_column", ""),
                priority=data["priority"],
            )
        else:
            job, _ = submission.submit_rows(
                user, data["model_ref"], data["parsed_rows"], priority=data["priority"]
            )
        obj.pk = job.pk
        obj.__dict__.update({k: v for k, v in job.__dict__.items() if k != "_state"})
        obj._state.adding = False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the job page is read-only; actions and the add form change jobs

    def has_change_jobs_permission(self, request: HttpRequest) -> bool:
        """Who may cancel and retry: staff who may change jobs, any job; staff who may submit
        them, their own (the API lets every owner). The page stays read-only."""
        user = request.user
        return user.has_perm(CHANGE_JOBS) or user.has_perm("predictions.add_predictionjob")

    @admin.action(description="Cancel selected jobs", permissions=["change_jobs"])
    def cancel_selected(self, request: HttpRequest, jobs: QuerySet[PredictionJob]) -> None:
        # Counted first: the selection is taken within the list's filters, so under "status:
        # queued" the jobs just cancelled were no longer in it ("Cancelled 2 of 0 job(s)").
        selected = jobs.count()
        jobs, why = self._own_unless_allowed(request, jobs)
        allowed = jobs.count()
        cancelled = running.cancel(jobs)
        finished = allowed - cancelled  # cancel leaves only jobs that had finished
        if finished:
            why += f" {finished} had already finished, so there was nothing to cancel."
        self._report(request, f"Cancelled {cancelled} of {selected} job(s).{why}", why)

    @admin.action(
        description="Retry selected failed or cancelled jobs", permissions=["change_jobs"]
    )
    def retry_selected(self, request: HttpRequest, jobs: QuerySet[PredictionJob]) -> None:
        selected = jobs.count()
        jobs, why = self._own_unless_allowed(request, jobs)
        ended = jobs.filter(status__in=[Status.FAILED, Status.CANCELLED])
        purged = ended.filter(purged_at__isnull=False).count()
        not_ended = jobs.count() - ended.count()
        retried = running.retry(jobs)
        if not_ended:
            why += f" {not_ended} had not failed or been cancelled."
        if purged:
            why += f" {purged} had their inputs deleted by result retention."
        self._report(request, f"Queued {retried} of {selected} job(s) again.{why}", why)

    def _own_unless_allowed(
        self, request: HttpRequest, jobs: QuerySet[PredictionJob]
    ) -> tuple[QuerySet[PredictionJob], str]:
        """The selected jobs this user may cancel or retry, and what was said of the rest."""
        if request.user.has_perm(CHANGE_JOBS):
            return jobs, ""
        own = jobs.filter(owner_id=request.user.pk)
        others = jobs.count() - own.count()
        why = f" {others} belonged to someone else: {CHANGE_JOBS_HELP}" if others else ""
        return own, why

    def _report(self, request: HttpRequest, message: str, why: str) -> None:
        """A success, or a warning saying why some selected jobs were left as they were."""
        self.message_user(request, message, messages.WARNING if why else messages.SUCCESS)

    @admin.display(description="job", ordering="id")
    def short_id(self, job: PredictionJob) -> str:
        return str(job.pk)[:8]

    @admin.display(description="status", ordering="status")
    def coloured_status(self, job: PredictionJob) -> SafeString:
        colour = STATUS_COLOURS.get(job.status, "#777")
        # data-job-status lets the page's script follow the job as its bar does (progress.js).
        return format_html(
            '<b style="color:{}" data-job-status="{}">{}</b>',
            colour,
            job.pk,
            job.get_status_display(),
        )

    @admin.display(description="model version", ordering="version__registered_model__name")
    def model_at_version(self, job: PredictionJob) -> str:
        return job.version.ref  # the reference a user would type: iris:3

    @admin.display(description="progress")
    def progress_bar(self, job: PredictionJob) -> SafeString:
        percent = round(job.progress * 100)
        # data-job and data-status let the page's script refresh the bar (mlsite/progress.js).
        return format_html(
            '<progress value="{}" max="100" title="{} of {} rows" data-job="{}" '
            'data-status="{}"></progress> <span data-job-percent="{}">{}%</span>',
            percent,
            job.rows_done,
            job.rows_total,
            job.pk,
            job.status,
            job.pk,
            percent,
        )

    @admin.display(description="duration")
    def duration(self, job: PredictionJob) -> str:
        if not job.started_at:
            return "–"
        end = job.finished_at
        if end is None:
            return "running"
        return f"{(end - job.started_at).total_seconds():.2f} s"

    @admin.display(description="inputs")
    def inputs_preview(self, job: PredictionJob) -> SafeString | str:
        return _json_preview(job.inputs, job.rows_total)

    @admin.display(description="outputs")
    def outputs_preview(self, job: PredictionJob) -> SafeString | str:
        return _json_preview(job.outputs, job.rows_total)

    @admin.display(description="result file")
    def result_link(self, job: PredictionJob) -> SafeString | str:
        if job.status != Status.SUCCEEDED:
            return "–"
        if job.purged_at:
            return f"deleted by result retention on {timezone.localtime(job.purged_at):%Y-%m-%d}"
        url = reverse("job-result", args=[job.pk])
        return format_html(
            '<a href="{}?format=csv">CSV</a> · <a href="{}?format=parquet">Parquet</a> · '
            '<a href="{}?format=json">JSON</a>',
            url,
            url,
            url,
        )

    @admin.display(description="failed rows")
    def error_link(self, job: PredictionJob) -> SafeString | str:
        if not job.error_file:
            return "–"
        return format_html('<a href="{}">error file</a>', reverse("job-errors", args=[job.pk]))

    @admin.display(description="input file")
    def input_file_name(self, job: PredictionJob) -> str:
        # Its name, not Django's link to it: uploads are not served, so the link was a 404.
        return job.input_file.name or "–"

    @admin.display(description="task result")
    def task_result_link(self, job: PredictionJob) -> SafeString | str:
        result = TaskResult.objects.filter(task_id=job.task_id).only("pk", "status").first()
        if result is None:
            return job.task_id or "–"
        url = reverse("admin:django_celery_results_taskresult_change", args=[result.pk])
        return format_html('<a href="{}">{} ({})</a>', url, job.task_id, result.status)

    @admin.display(description="chunks")
    def chunks(self, job: PredictionJob) -> SafeString | str:
        chunks = BatchChunk.objects.filter(job=job).values_list("status").order_by()
        counts: dict[str, int] = {}
        for (status,) in chunks:
            counts[status] = counts.get(status, 0) + 1
        if not counts:
            return "–"
        rows: list[tuple[str, int]] = sorted(counts.items(), key=lambda kv: kv[0])
        return format_html_join(", ", "{} {}", rows)


def _form_field(api_field: str | None) -> str | None:
    if not api_field:
        return None
    if api_field.startswith("inputs"):
        return "rows"
    return {"file": "upload", "id_column": "id_column"}.get(api_field)


def _json_preview(rows: Any, total: int) -> SafeString | str:
    if not rows:
        return "–"
    shown = json.dumps(rows[:PREVIEW_ROWS], indent=1)
    more = f"\n… {total - PREVIEW_ROWS} more rows" if total > PREVIEW_ROWS else ""
    return format_html("<pre>{}{}</pre>", shown, more)


@admin.register(BatchChunk)
class BatchChunkAdmin(admin.ModelAdmin):
    list_display = [
        "job",
        "index",
        "start_row",
        "stop_row",
        "status",
        "attempts",
        "rows_failed",
        "updated_at",
    ]
    list_filter = ["status"]
    search_fields = ["job__id"]
    list_select_related = ["job"]
    readonly_fields = [field.name for field in BatchChunk._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
