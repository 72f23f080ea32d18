"""Registered models, their versions and stage history, and the training that makes them."""

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone


class TaskKind(models.TextChoices):
    CLASSIFICATION = "classification", "Classification"
    REGRESSION = "regression", "Regression"


class Stage(models.TextChoices):
    NONE = "none", "None"
    STAGING = "staging", "Staging"
    PRODUCTION = "production", "Production"
    ARCHIVED = "archived", "Archived"


class ArtifactFormat(models.TextChoices):
    JOBLIB = "joblib", "joblib (restricted unpickler)"
    SKOPS = "skops", "skops (no pickle)"


class VersionSource(models.TextChoices):
    UPLOAD = "upload", "Upload"
    TRAINING = "training", "Training run"


FEATURE_EXAMPLE = '{"name": "sepal_length", "type": "number"}'
# Rows are checked and passed to the estimator as floats (predictions.inputs.check_number),
# so "number" is the only feature type there is.
FEATURE_KEYS = {"name", "type"}


def schema_problem(schema: Any) -> str | None:
    """What makes `schema` unusable for checking rows, in words; None when it is usable."""
    if not isinstance(schema, list):
        shown = json.dumps(schema)[:60]
        return f"The schema must be a list of features such as [{FEATURE_EXAMPLE}], not {shown}."
    seen: set[str] = set()
    for place, feature in enumerate(schema, 1):
        if not isinstance(feature, dict):
            shown = json.dumps(feature)[:60]
            return f"Feature {place} must be an object such as {FEATURE_EXAMPLE}, not {shown}."
        name = feature.get("name")
        if not isinstance(name, str) or not name.strip():
            return f'Feature {place} needs a name: "name" must be non-empty text.'
        if name != name.strip():  # CSV header names are stripped, so it could never match
            return f"Feature {place}'s name {name!r} starts or ends with a space."
        if feature.get("type") != "number":
            return f'Feature {place} ({name}) must have "type": "number", the only type.'
        unknown = sorted(set(feature) - FEATURE_KEYS)
        if unknown:
            keys = ", ".join(unknown)
            return f"Feature {place} ({name}) has unknown key {keys}: only name and type."
        if name in seen:
            return f"Feature names must be unique: {name} appears twice."
        seen.add(name)
    return None


def _is_sound(schema: Any) -> bool:
    return bool(schema) and schema_problem(schema) is None


class RegisteredModel(models.Model):
    name = models.SlugField(
        "name", max_length=100, unique=True, help_text="Used in references: name, name:3."
    )
    task_kind = models.CharField(
        "task kind",
        max_length=20,
        choices=TaskKind.choices,
        help_text="Classifiers also return class probabilities.",
    )
    description = models.TextField("description", blank=True, help_text="What it predicts.")
    input_schema = models.JSONField(
        "input schema",
        default=list,
        blank=True,
        help_text='Ordered features: [{"name": "sepal_length", "type": "number"}, …].',
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="created by",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who registered the model.",
    )
    created_at = models.DateTimeField("created", auto_now_add=True, help_text="When.")

    class Meta:
        ordering = ["name"]
        verbose_name = "registered model"

    def __str__(self) -> str:
        return self.name

    @property
    def feature_names(self) -> list[str]:
        return [feature["name"] for feature in self.input_schema]

    def has_versions(self) -> bool:
        return self.pk is not None and self.versions.exists()

    def has_fixed_schema(self) -> bool:
        """Versions were fitted on this schema, so it may not change.

        A schema saved empty or broken before schemas were checked stays editable, to be
        repaired.
        """
        if not self.has_versions():
            return False
        stored = RegisteredModel.objects.values_list("input_schema", flat=True).get(pk=self.pk)
        return _is_sound(stored)

    def clean(self) -> None:
        if self.input_schema is None:  # null, or the form's box left blank
            raise ValidationError({"input_schema": "The schema cannot be null: write [] for none."})
        problem = schema_problem(self.input_schema)
        if problem:
            raise ValidationError({"input_schema": problem})
        if self.has_versions():
            self._check_fits_versions()

    def _check_fits_versions(self) -> None:
        stored = RegisteredModel.objects.get(pk=self.pk)
        why = "cannot change once the model has versions: its versions were fitted on it."
        errors = {}
        if self.task_kind != stored.task_kind:
            errors["task_kind"] = f"The task kind {why}"
        if _is_sound(stored.input_schema) and self.input_schema != stored.input_schema:
            errors["input_schema"] = f"The schema {why}"
        elif not self.input_schema:
            errors["input_schema"] = "The schema must list the features its versions take."
        if errors:
            raise ValidationError(errors)


def artifact_path(version: "ModelVersion", filename: str) -> str:
    extension = "skops" if version.artifact_format == ArtifactFormat.SKOPS else "joblib"
    return f"artifacts/{version.registered_model.name}/v{version.number}.{extension}"


class ModelVersion(models.Model):
    registered_model = models.ForeignKey(
        RegisteredModel,
        verbose_name="model",
        on_delete=models.PROTECT,
        related_name="versions",
        help_text="The model this is a version of.",
    )
    number = models.PositiveIntegerField("version", help_text="1, 2, … per model.")
    artifact = models.FileField(
        "artifact", upload_to=artifact_path, max_length=300, help_text="The stored estimator."
    )
    artifact_format = models.CharField(
        "format",
        max_length=10,
        choices=ArtifactFormat.choices,
        default=ArtifactFormat.JOBLIB,
        help_text="How the artifact is serialised.",
    )
    sha256 = models.CharField(
        "sha256", max_length=64, help_text="Checked before every load; a mismatch is refused."
    )
    size = models.BigIntegerField("size (bytes)", default=0, help_text="Artifact size.")
    estimator_class = models.CharField(
        "estimator", max_length=200, blank=True, help_text="Dotted class of the estimator."
    )
    library_versions = models.JSONField(
        "library versions",
        default=dict,
        blank=True,
        help_text="Python, scikit-learn, joblib and NumPy versions it was saved with.",
    )
    metrics = models.JSONField("metrics", default=dict, blank=True, help_text="Holdout metrics.")
    params = models.JSONField("params", default=dict, blank=True, help_text="Estimator parameters.")
    source = models.CharField(
        "source",
        max_length=10,
        choices=VersionSource.choices,
        default=VersionSource.UPLOAD,
        help_text="Uploaded by a person, or produced by a training run.",
    )
    stage = models.CharField(
        "stage",
        max_length=12,
        choices=Stage.choices,
        default=Stage.NONE,
        help_text="At most one production version per model.",
    )
    is_usable = models.BooleanField(
        "usable",
        default=True,
        help_text="Cleared when the stored artifact no longer matches its sha256.",
    )
    unusable_reason = models.CharField(
        "why unusable", max_length=300, blank=True, help_text="Set with usable off."
    )
    description = models.TextField("description", blank=True, help_text="Notes on it.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="created by",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Who registered it.",
    )
    created_at = models.DateTimeField("created", auto_now_add=True, help_text="When.")

    class Meta:
        ordering = ["registered_model__name", "-number"]
        verbose_name = "model version"
        constraints = [
            models.UniqueConstraint(
                fields=["registered_model", "number"], name="unique_version_number"
            ),
            # The database, not only our code, keeps one production version per model:
            # two concurrent promotions cannot both win.
            models.UniqueConstraint(
                fields=["registered_model"],
                condition=Q(stage="production"),
                name="one_production_version_per_model",
            ),
        ]

    def __str__(self) -> str:
        return self.ref

    @property
    def ref(self) -> str:
        return f"{self.registered_model.name}:{self.number}"


class StageChange(models.Model):
    version = models.ForeignKey(
        ModelVersion,
        verbose_name="version",
        on_delete=models.CASCADE,
        related_name="stage_changes",
        help_text="The version whose stage changed.",
    )
    from_stage = models.CharField("from", max_length=12, choices=Stage.choices, help_text="")
    to_stage = models.CharField("to", max_length=12, choices=Stage.choices, help_text="")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="changed by",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Empty when a training run promoted it.",
    )
    changed_at = models.DateTimeField("changed", auto_now_add=True, help_text="When.")
    note = models.CharField("note", max_length=300, blank=True, help_text="Why.")

    class Meta:
        ordering = ["-changed_at", "-id"]
        verbose_name = "stage change"

    def __str__(self) -> str:
        return f"{self.version}: {self.from_stage} → {self.to_stage}"


class BuiltinDataset(models.TextChoices):
    IRIS = "iris", "Iris (classification)"
    WINE = "wine", "Wine (classification)"
    BREAST_CANCER = "breast_cancer", "Breast cancer (classification)"
    DIGITS = "digits", "Digits (classification)"
    DIABETES = "diabetes", "Diabetes (regression)"


class Dataset(models.Model):
    name = models.SlugField("name", max_length=100, unique=True, help_text="A short name.")
    builtin = models.CharField(
        "built-in dataset",
        max_length=20,
        choices=BuiltinDataset.choices,
        blank=True,
        help_text="A dataset that ships with scikit-learn; leave empty to upload a file.",
    )
    file = models.FileField(
        "file",
        upload_to="datasets/",
        blank=True,
        max_length=300,
        help_text="A CSV or Parquet file with the features and the target column.",
    )
    target_column = models.CharField(
        "target column", max_length=200, blank=True, help_text="Required for a file."
    )
    description = models.TextField("description", blank=True, help_text="Where it comes from.")
    created_at = models.DateTimeField("created", auto_now_add=True, help_text="When.")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(builtin="") & ~Q(file="")) | (~Q(builtin="") & Q(file="")),
                name="dataset_is_builtin_or_file",
            )
        ]

    def __str__(self) -> str:
        return self.name


class Estimator(models.TextChoices):
    LOGISTIC_REGRESSION = "logistic_regression", "Logistic regression"
    RIDGE = "ridge", "Ridge regression"
    RANDOM_FOREST_CLASSIFIER = "random_forest_classifier", "Random forest (classifier)"
    RANDOM_FOREST_REGRESSOR = "random_forest_regressor", "Random forest (regressor)"
    GRADIENT_BOOSTING_CLASSIFIER = "gradient_boosting_classifier", "Gradient boosting (clf)"
    GRADIENT_BOOSTING_REGRESSOR = "gradient_boosting_regressor", "Gradient boosting (reg)"
    HIST_GRADIENT_BOOSTING_CLASSIFIER = "hist_gradient_boosting_classifier", "Hist GB (clf)"
    HIST_GRADIENT_BOOSTING_REGRESSOR = "hist_gradient_boosting_regressor", "Hist GB (reg)"
    DUMMY_CLASSIFIER = "dummy_classifier", "Dummy (classifier, baseline)"
    DUMMY_REGRESSOR = "dummy_regressor", "Dummy (regressor, baseline)"


class Metric(models.TextChoices):
    ACCURACY = "accuracy", "Accuracy"
    F1 = "f1", "F1 (macro)"
    ROC_AUC = "roc_auc", "ROC AUC"
    RMSE = "rmse", "RMSE"
    MAE = "mae", "MAE"
    R2 = "r2", "R²"


class PromotionPolicy(models.TextChoices):
    NEVER = "never", "Never"
    IF_BETTER = "if_better", "If better than production on the same holdout"
    ALWAYS = "always", "Always"


class TrainingSpec(models.Model):
    name = models.SlugField("name", max_length=100, unique=True, help_text="A short name.")
    registered_model = models.ForeignKey(
        RegisteredModel,
        verbose_name="model",
        on_delete=models.CASCADE,
        related_name="training_specs",
        help_text="The model whose versions this produces.",
    )
    dataset = models.ForeignKey(
        Dataset,
        verbose_name="dataset",
        on_delete=models.PROTECT,
        related_name="training_specs",
        help_text="What to train on.",
    )
    estimator = models.CharField(
        "estimator", max_length=50, choices=Estimator.choices, help_text="From the allow-list."
    )
    params: Any = models.JSONField(
        "params", default=dict, blank=True, help_text='Estimator parameters, e.g. {"C": 0.5}.'
    )
    holdout_share = models.FloatField(
        "holdout share", default=0.2, help_text="Share of rows kept aside to evaluate (0–1)."
    )
    seed = models.IntegerField("seed", default=0, help_text="Random seed for the split and fit.")
    primary_metric = models.CharField(
        "primary metric",
        max_length=20,
        choices=Metric.choices,
        help_text="Compared with production to decide a promotion.",
    )
    promotion_policy = models.CharField(
        "promotion policy",
        max_length=20,
        choices=PromotionPolicy.choices,
        default=PromotionPolicy.IF_BETTER,
        help_text="Whether a new version goes to production.",
    )
    timezone = models.CharField(
        "time zone",
        max_length=64,
        default="UTC",
        help_text="Time zone in which the schedule's next runs are shown.",
    )
    periodic_task = models.OneToOneField(
        "django_celery_beat.PeriodicTask",
        verbose_name="schedule",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_spec",
        help_text="The beat entry that runs this spec.",
    )
    created_at = models.DateTimeField("created", auto_now_add=True, help_text="When.")

    class Meta:
        ordering = ["name"]
        verbose_name = "training spec"

    def __str__(self) -> str:
        return self.name


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class RunTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule"
    ADMIN = "admin", "Admin"
    API = "api", "API"


class TrainingRun(models.Model):
    spec = models.ForeignKey(
        TrainingSpec,
        verbose_name="spec",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
        help_text="Empty when a schedule named a spec that does not exist.",
    )
    trigger = models.CharField(
        "trigger", max_length=10, choices=RunTrigger.choices, help_text="What started it."
    )
    status = models.CharField(
        "status",
        max_length=10,
        choices=RunStatus.choices,
        default=RunStatus.QUEUED,
        help_text="Queued, running, succeeded, failed or cancelled.",
    )
    metrics = models.JSONField(
        "metrics", default=dict, blank=True, help_text="The new version's holdout metrics."
    )
    production_metrics = models.JSONField(
        "production metrics",
        default=dict,
        blank=True,
        help_text="The production version's metrics on the same holdout.",
    )
    version = models.ForeignKey(
        ModelVersion,
        verbose_name="version",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="training_runs",
        help_text="The version this run registered.",
    )
    promoted = models.BooleanField("promoted", default=False, help_text="Went to production.")
    promotion_reason = models.CharField(
        "why", max_length=300, blank=True, help_text="Why it was or was not promoted."
    )
    error = models.TextField("error", blank=True, help_text="Why the run failed.")
    task_id = models.CharField("task id", max_length=255, blank=True, help_text="Celery task.")
    created_at = models.DateTimeField("created", auto_now_add=True, help_text="When queued.")
    sent_at = models.DateTimeField(
        "sent",
        default=timezone.now,
        help_text="When its message was last sent: one still queued a task time limit later "
        "is sent again.",
    )
    started_at = models.DateTimeField("started", null=True, blank=True, help_text="")
    finished_at = models.DateTimeField("finished", null=True, blank=True, help_text="")
    lease_expires_at = models.DateTimeField(
        "lease expires",
        null=True,
        blank=True,
        help_text="While running: renewed as it trains; past it, its worker is presumed lost.",
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "training run"
        constraints = [
            # Two runs of one spec never overlap: the second cannot become running.
            models.UniqueConstraint(
                fields=["spec"], condition=Q(status="running"), name="one_running_run_per_spec"
            )
        ]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.spec or 'unknown spec'}"
