"""Prediction jobs and the chunks a batch job is split into."""

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from modelregistry.models import ModelVersion


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


class Kind(models.TextChoices):
    SINGLE = "single", "Single (inline rows)"
    BATCH = "batch", "Batch (file)"


class FileFormat(models.TextChoices):
    CSV = "csv", "CSV"
    PARQUET = "parquet", "Parquet"


class PredictionJob(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="owner",
        on_delete=models.CASCADE,
        related_name="prediction_jobs",
        db_index=False,  # job_owner_created leads with it
        help_text="Who submitted it; only they and staff can see it.",
    )
    version = models.ForeignKey(
        ModelVersion,
        verbose_name="model version",
        on_delete=models.PROTECT,
        related_name="jobs",
        help_text="The version the reference resolved to at submission.",
    )
    model_ref = models.CharField(
        "asked for", max_length=120, help_text="The reference as submitted (iris, iris:3, …)."
    )
    artifact_sha256 = models.CharField(
        "artifact sha256", max_length=64, help_text="The exact artifact that served this job."
    )
    kind = models.CharField(
        "kind", max_length=10, choices=Kind.choices, default=Kind.SINGLE, help_text=""
    )
    status = models.CharField(
        "status",
        max_length=10,
        choices=Status.choices,
        default=Status.QUEUED,
        help_text="Queued → running → succeeded, failed or cancelled.",
    )
    priority = models.PositiveSmallIntegerField(
        "priority", default=5, help_text="0 (lowest) to 9 (highest)."
    )
    inputs = models.JSONField(
        "inputs", null=True, blank=True, help_text="The rows, for a small job."
    )
    input_file = models.FileField(
        "input file",
        upload_to="uploads/%Y/%m/%d/",
        blank=True,
        max_length=300,
        help_text="The uploaded CSV or Parquet file, for a batch job.",
    )
    input_format = models.CharField(
        "input format", max_length=10, choices=FileFormat.choices, blank=True, help_text=""
    )
    id_column = models.CharField(
        "id column", max_length=200, blank=True, help_text="Carried through to the output."
    )
    outputs = models.JSONField(
        "outputs", null=True, blank=True, help_text="One entry per row, for a small job."
    )
    result_file = models.FileField(
        "result file", blank=True, max_length=300, help_text="The merged output, for a batch job."
    )
    error_file = models.FileField(
        "error file", blank=True, max_length=300, help_text="Rows that could not be scored."
    )
    rows_total = models.PositiveIntegerField("rows", default=0, help_text="Rows to score.")
    rows_done = models.PositiveIntegerField("rows done", default=0, help_text="Rows scored.")
    rows_failed = models.PositiveIntegerField(
        "rows failed", default=0, help_text="Rows that could not be scored (see the error file)."
    )
    error_code = models.CharField("error code", max_length=50, blank=True, help_text="")
    error_message = models.TextField("error", blank=True, help_text="Why the job failed.")
    task_id = models.CharField(
        "task id",
        max_length=255,
        blank=True,
        help_text="The Celery task of the latest attempt (see its task result).",
    )
    idempotency_key = models.CharField(
        "idempotency key",
        max_length=200,
        blank=True,
        help_text="A second submission with the same key returns this job.",
    )
    attempts = models.PositiveSmallIntegerField(
        "attempts", default=0, help_text="How many times a worker started it."
    )
    created_at = models.DateTimeField("created", auto_now_add=True, db_index=True, help_text="")
    enqueued_at = models.DateTimeField(
        "enqueued", null=True, blank=True, help_text="When its message was last sent."
    )
    started_at = models.DateTimeField("started", null=True, blank=True, help_text="")
    finished_at = models.DateTimeField("finished", null=True, blank=True, help_text="")
    lease_expires_at = models.DateTimeField(
        "lease expires",
        null=True,
        blank=True,
        help_text="A running job whose lease expires is presumed lost with its worker.",
    )
    purged_at = models.DateTimeField(
        "payload purged", null=True, blank=True, help_text="When retention removed the data."
    )
    text_predictions = models.BooleanField(
        "text predictions",
        default=False,
        help_text="A batch job's class labels are text: its CSV is read back with them as text.",
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "prediction job"
        # Every index costs each submission and each status change a write: the three
        # single-column ones these lead with, or that nothing looks up, were a ninth of the
        # SQLite CPU of a job's INSERT and two UPDATEs (825 -> 733 us, timed in-process).
        # created_at alone orders the staff's lists.
        indexes = [
            models.Index(fields=["status", "created_at"], name="job_status_created"),
            models.Index(fields=["owner", "-created_at"], name="job_owner_created"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="unique_idempotency_key_per_owner",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def progress(self) -> float:
        return self.rows_done / self.rows_total if self.rows_total else 0.0


class ChunkStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"


class BatchChunk(models.Model):
    """A row range of a batch job, scored by one task; done chunks survive a crash."""

    job = models.ForeignKey(
        PredictionJob, on_delete=models.CASCADE, related_name="chunks", help_text=""
    )
    index = models.PositiveIntegerField("index", help_text="0, 1, … in file order.")
    start_row = models.PositiveIntegerField("first row", help_text="Zero-based, inclusive.")
    stop_row = models.PositiveIntegerField("last row", help_text="Zero-based, exclusive.")
    start_byte = models.PositiveBigIntegerField(
        "first byte",
        default=0,
        help_text="Of a plain CSV's range; 0 with stop byte 0 for a row group.",
    )
    stop_byte = models.PositiveBigIntegerField("stop byte", default=0, help_text="Exclusive.")
    status = models.CharField(
        "status", max_length=10, choices=ChunkStatus.choices, default=ChunkStatus.PENDING
    )
    rows_failed = models.PositiveIntegerField("rows failed", default=0, help_text="")
    claimed_by = models.CharField(
        "claimed by",
        max_length=255,
        blank=True,
        default="",
        help_text="The Celery task id scoring it; that task's own retry may take it back.",
    )
    attempts = models.PositiveIntegerField(
        "attempts", default=0, help_text="Claims by a task; lost this often, its job fails."
    )
    lease_expires_at = models.DateTimeField(
        "lease expires",
        null=True,
        blank=True,
        help_text="While running: renewed as it scores; past it, its worker is presumed lost.",
    )
    updated_at = models.DateTimeField("updated", auto_now=True, help_text="")

    class Meta:
        ordering = ["job", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="unique_chunk_index")]

    def __str__(self) -> str:
        return f"chunk {self.index} of {self.job_id}"
