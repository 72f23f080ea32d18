"""Resolving references to versions, registering new versions, and moving them between stages."""

import hashlib
import re
from functools import partial
from typing import IO, Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Max, Q

from mlsite.errors import BadInput, Conflict, NotFound
from mlsite.freshcache import FreshCache

from . import artifacts, upload_inspection
from .models import (
    ArtifactFormat,
    ModelVersion,
    RegisteredModel,
    Stage,
    StageChange,
    TaskKind,
    VersionSource,
    schema_problem,
)

NAME_MAX_LENGTH = 100  # RegisteredModel.name's max_length
SLUG_PATTERN = re.compile(r"^[-a-zA-Z0-9_]+$")
# ASCII only: \d and \w match other scripts' digits too, and int("\u0661") is 1.
REF_PATTERN = re.compile(
    r"^(?P<name>[-\w]+)(?:@(?P<stage>production|staging)|:(?P<number>\d+))?$", re.ASCII
)


class UnknownModel(NotFound):
    code = "unknown_model"


class FeatureMismatch(BadInput):
    code = "feature_mismatch"


class TaskKindMismatch(BadInput):
    code = "task_kind_mismatch"


class StageConflict(Conflict):
    code = "stage_conflict"


class ModelExists(Conflict):
    code = "model_exists"


class BadMetrics(BadInput):
    code = "bad_metrics"


def check_metrics(metrics: dict[str, Any] | None) -> None:
    """Raise BadMetrics for more than MAX_METRICS metrics or a name over MAX_METRIC_NAME_LENGTH.

    Each metric becomes a column, a chart and a JSON key on every page and list of its
    model's versions: 300,000 of them (4.7 MB, under the request limit) made the admin pages
    of one model take two minutes to render.
    """
    metrics = metrics or {}
    if len(metrics) > settings.MAX_METRICS:
        raise BadMetrics(
            f"a version has at most {settings.MAX_METRICS} metrics; these are {len(metrics)}",
            field="metrics",
        )
    limit = settings.MAX_METRIC_NAME_LENGTH
    for name in metrics:
        if not 0 < len(name) <= limit:
            raise BadMetrics(
                f"a metric's name is 1 to {limit} characters; one has {len(name)}: {name[:40]!r}",
                field="metrics",
            )


def resolve(ref: str) -> ModelVersion:
    """`name` and `name@production` mean the production version; `name@staging`; `name:3`.

    Raises UnknownModel. The version is shared by the process's callers: read, never change it.
    """
    return _resolved.get(ref, partial(_resolve, ref))


_resolved: FreshCache[ModelVersion] = FreshCache()


def _resolve(ref: str) -> ModelVersion:
    match = REF_PATTERN.match(ref.strip())
    if not match:
        raise UnknownModel(
            f"{ref!r} is not a model reference (name, name@staging, name:3)", field="model"
        )
    name = match["name"]
    versions = ModelVersion.objects.select_related("registered_model").filter(
        registered_model__name=name
    )
    # One query when the reference resolves (every submission pays for it); the model's
    # existence is asked only to word the error.
    if match["number"]:
        version = versions.filter(number=int(match["number"])).first()
        missing = f"model {name!r} has no version {match['number']}"
    else:
        stage = match["stage"] or Stage.PRODUCTION
        version = versions.filter(stage=stage).order_by("-number").first()
        missing = f"model {name!r} has no {stage} version"
    if version is not None:
        return version
    if not RegisteredModel.objects.filter(name=name).exists():
        raise UnknownModel(f"no model named {name!r}", field="model")
    raise UnknownModel(missing, field="model")


def sha256_of(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    stream.seek(0)
    for block in iter(lambda: stream.read(1024 * 1024), b""):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()


def register_version(
    model: RegisteredModel,
    artifact: IO[bytes],
    *,
    estimator_class: str,
    artifact_format: str = ArtifactFormat.JOBLIB,
    created_by: User | None = None,
    source: str = VersionSource.UPLOAD,
    metrics: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    library_versions: dict[str, str] | None = None,
    description: str = "",
) -> ModelVersion:
    """Store an already-validated artifact as the model's next version (stage none).

    Raises BadMetrics (check_metrics): every way a version is made comes through here.
    """
    check_metrics(metrics)
    with transaction.atomic():
        # Lock the model row so two registrations cannot take the same number.
        RegisteredModel.objects.select_for_update().get(pk=model.pk)
        last = model.versions.aggregate(last=Max("number"))["last"] or 0
        version = ModelVersion(
            registered_model=model,
            number=last + 1,
            artifact_format=artifact_format,
            sha256=sha256_of(artifact),
            size=artifacts.size_of(artifact),
            estimator_class=estimator_class,
            library_versions=library_versions or {},
            metrics=metrics or {},
            params=params or {},
            source=source,
            created_by=created_by,
            description=description,
        )
        version.artifact.save("artifact", File(artifact), save=False)
        try:
            version.save()
        except BaseException:  # no row will point at the file
            version.artifact.delete(save=False)
            raise
    return version


def upload(
    name: str,
    artifact: IO[bytes],
    *,
    artifact_format: str = ArtifactFormat.JOBLIB,
    created_by: User | None = None,
    description: str = "",
    metrics: dict[str, Any] | None = None,
    new_model: bool = False,
) -> ModelVersion:
    """Check an uploaded artifact and register it as the next version of model `name`.

    A model that does not exist yet is created, with its kind and input schema taken from
    the estimator (as is the schema of a model with no versions and an empty schema); with
    `new_model`, one that exists raises ModelExists. Raises BadMetrics, the
    artifacts.ArtifactRefused family, ArtifactTooLarge, FeatureMismatch or TaskKindMismatch;
    nothing is stored when any check fails.
    """
    check_metrics(metrics)  # before any unpickling: the cheap refusal first
    inspection = upload_inspection.inspect_artifact(
        artifact, artifact_format
    )  # an upload: in a child
    with transaction.atomic():
        model = _model_for(name, inspection, created_by, new_model=new_model)
        return _register_inspected(
            model,
            artifact,
            inspection,
            artifact_format=artifact_format,
            created_by=created_by,
            source=VersionSource.UPLOAD,
            metrics=metrics,
            description=description,
        )


def register_estimator(
    model: RegisteredModel,
    estimator: Any,
    *,
    artifact_format: str = ArtifactFormat.JOBLIB,
    source: str = VersionSource.TRAINING,
    created_by: User | None = None,
    metrics: dict[str, Any] | None = None,
    description: str = "",
) -> ModelVersion:
    """Serialise a fitted estimator and register it, through the same checks as an upload."""
    is_skops = artifact_format == ArtifactFormat.SKOPS
    artifact = artifacts.dump_skops(estimator) if is_skops else artifacts.dump_joblib(estimator)
    inspection = artifacts.inspect_artifact(artifact, artifact_format)
    return _register_inspected(
        model,
        artifact,
        inspection,
        artifact_format=artifact_format,
        created_by=created_by,
        source=source,
        metrics=metrics,
        description=description,
    )


def _register_inspected(
    model: RegisteredModel,
    artifact: IO[bytes],
    inspection: artifacts.Inspection,
    **fields: Any,
) -> ModelVersion:
    """Register an inspected artifact once it fits the model; uploads and training share it."""
    with transaction.atomic():
        # Lock the model row first: two first uploads must not each set their own schema.
        model = RegisteredModel.objects.select_for_update().get(pk=model.pk)
        _take_schema_if_empty(model, inspection)
        check_fits(model, inspection)
        return register_version(
            model,
            artifact,
            estimator_class=inspection.estimator_class,
            params=inspection.params,
            library_versions=inspection.library_versions,
            **fields,
        )


def _take_schema_if_empty(model: RegisteredModel, inspection: artifacts.Inspection) -> None:
    """A model added without a schema takes its first estimator's, as one its upload creates."""
    if not model.input_schema and not model.versions.exists():
        model.input_schema = inspection.input_schema
        model.save(update_fields=["input_schema"])


def _model_for(
    name: str, inspection: artifacts.Inspection, created_by: User | None, *, new_model: bool
) -> RegisteredModel:
    if len(name) > NAME_MAX_LENGTH:
        raise BadInput(
            f"a model name is at most {NAME_MAX_LENGTH} characters; this one is too long "
            f"({len(name)})",
            field="name",
        )
    if not SLUG_PATTERN.fullmatch(name):
        raise BadInput(f"{name!r} is not a model name (letters, digits, - and _)", field="name")
    model, created = RegisteredModel.objects.get_or_create(
        name=name,
        defaults={
            "task_kind": inspection.task_kind,
            "input_schema": inspection.input_schema,
            "created_by": created_by,
        },
    )
    if new_model and not created:  # also when another upload created it a moment ago
        raise ModelExists(f"a model named {name!r} exists already", field="name")
    return model


def check_fits(model: RegisteredModel, inspection: artifacts.Inspection) -> None:
    """Raise unless the estimator's kind and features agree with the model's."""
    # Names from a DataFrame the estimator was fitted on, held to the rules the admin's schema
    # form applies: one starting with a space, say, could never match a CSV's stripped header.
    problem = schema_problem(inspection.input_schema)
    if problem:
        raise FeatureMismatch(
            f"the estimator's features cannot be a schema: {problem} Rename it and refit."
        )
    if model.task_kind != inspection.task_kind:
        raise TaskKindMismatch(
            f"{model.name} is a {TaskKind(model.task_kind).label.lower()} model, but the "
            f"artifact is a {TaskKind(inspection.task_kind).label.lower()} estimator"
        )
    expected = model.feature_names
    if len(expected) != len(inspection.feature_names):
        raise FeatureMismatch(
            f"the estimator takes {len(inspection.feature_names)} features, but {model.name}'s "
            f"schema has {len(expected)} ({', '.join(expected)})"
        )
    # Rows are passed in schema order, so names the estimator was fitted on must match it.
    if inspection.feature_names_from_estimator and inspection.feature_names != expected:
        # RegisteredModel.clean keeps the schema its versions were fitted on.
        hint = "refit on those" if model.has_versions() else "edit the schema or refit"
        raise FeatureMismatch(
            f"the estimator was fitted on features {inspection.feature_names}, but "
            f"{model.name}'s schema is {expected}: {hint}"
        )


def promote(
    version: ModelVersion, stage: str, *, user: User | None = None, note: str = ""
) -> ModelVersion:
    """Move a version to `stage`, recording a StageChange; a no-op when it is already there.

    Promoting to production archives the previous production version in the same
    transaction. Raises StageConflict for an unusable version sent to production.
    """
    if stage not in Stage.values:
        raise BadInput(f"{stage!r} is not a stage ({', '.join(Stage.values)})", field="stage")
    try:
        with transaction.atomic():
            # Lock the model row: promotions of one model take turns, so each sees the
            # production version the previous one left (the constraint is the backstop).
            RegisteredModel.objects.select_for_update().get(pk=version.registered_model_id)
            version = ModelVersion.objects.select_related("registered_model").get(pk=version.pk)
            if version.stage == stage:
                return version
            if stage == Stage.PRODUCTION:
                _check_servable(version)
                current = version.registered_model.versions.filter(stage=Stage.PRODUCTION)
                for previous in current.exclude(pk=version.pk):
                    _move(previous, Stage.ARCHIVED, user, f"replaced by version {version.number}")
            _move(version, stage, user, note)
    except IntegrityError:
        raise StageConflict(f"{version.ref}: another promotion won; try again") from None
    return version


def _check_servable(version: ModelVersion) -> None:
    if not version.is_usable:
        raise StageConflict(f"{version.ref} is unusable ({version.unusable_reason})")


def _move(version: ModelVersion, stage: str, user: User | None, note: str) -> None:
    StageChange.objects.create(
        version=version, from_stage=version.stage, to_stage=stage, changed_by=user, note=note
    )
    version.stage = stage
    version.save(update_fields=["stage"])


def previous_production(model: RegisteredModel) -> ModelVersion | None:
    """The newest usable version, older than the current production one, that was in production.

    Versions are numbered in order of registration, so rolling back twice steps back twice
    (3 → 2 → 1) instead of swapping between two versions.
    """
    current = model.versions.filter(stage=Stage.PRODUCTION).first()
    entered_or_left = Q(stage_changes__to_stage=Stage.PRODUCTION) | Q(
        stage_changes__from_stage=Stage.PRODUCTION
    )
    was_in_production = (
        model.versions.filter(entered_or_left, is_usable=True)
        .exclude(stage=Stage.PRODUCTION)
        .distinct()
    )
    if current is not None:
        was_in_production = was_in_production.filter(number__lt=current.number)
    return was_in_production.select_related("registered_model").order_by("-number").first()


def rollback(model: RegisteredModel, *, user: User | None = None, note: str = "") -> ModelVersion:
    """Put the previous production version back in production. Raises StageConflict."""
    previous = previous_production(model)
    if previous is None:
        raise StageConflict(f"{model.name} has no earlier production version to roll back to")
    return promote(previous, Stage.PRODUCTION, user=user, note=note or "rollback")
