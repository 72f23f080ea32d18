"""Admin pages of the project: the dashboard, and the JSON its progress bars poll."""

import uuid
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse

from predictions.admin import STATUS_COLOURS
from predictions.models import FINISHED, Kind, PredictionJob, Status

from . import charts, dashboard

MAX_POLLED_JOBS = 200


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Jobs, queues, workers, beat and the last hour, on one admin page."""
    minutes = dashboard.last_hour()
    running_batches = (
        PredictionJob.objects.filter(status=Status.RUNNING, kind=Kind.BATCH)
        .select_related("version__registered_model", "owner")
        .order_by("started_at")[:20]
    )
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": "Queue dashboard",
        "jobs": dashboard.jobs_per_status(),
        "depths": dashboard.queue_depths(),
        "workers": dashboard.workers(),
        "beat": dashboard.beat(),
        "next_runs": dashboard.next_beat_runs(),
        "chart": charts.throughput_chart(minutes),
        "finished_last_hour": sum(minute["finished"] for minute in minutes),
        "running_batches": running_batches,
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def job_progress_view(request: HttpRequest) -> JsonResponse:
    """?ids=a,b,c → each job's status and progress, for the bars (and the status beside
    them on the job list) on admin pages."""
    ids = [value for value in request.GET.get("ids", "").split(",") if value][:MAX_POLLED_JOBS]
    jobs = PredictionJob.objects.filter(pk__in=_valid_uuids(ids)).only(
        "status", "rows_done", "rows_total"
    )
    return JsonResponse(
        {
            "jobs": {
                str(job.pk): {
                    "status": job.status,
                    "rows_done": job.rows_done,
                    "rows_total": job.rows_total,
                    "percent": round(job.progress * 100),
                    "finished": job.status in FINISHED,
                    "label": job.get_status_display(),
                    "colour": STATUS_COLOURS.get(job.status, "#777"),
                }
                for job in jobs
            }
        }
    )


def _valid_uuids(values: list[str]) -> list[str]:
    valid = []
    for value in values:
        try:
            valid.append(str(uuid.UUID(value)))
        except ValueError:
            continue
    return valid
