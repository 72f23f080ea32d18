"""Resolving references to versions, registering new versions, and moving them between stages."""

import hashlib
import re
from typing import IO, Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.files import File
from django.db import transaction
from django.db.models import Max

from mlsite.errors import NotFound

from .models import ArtifactFormat, ModelVersion, RegisteredModel, Stage, VersionSource

REF_PATTERN = re.compile(r"^(?P<name>[-\w]+)(?:@(?P<stage>production|staging)|:(?P<number>\d+))?$")


class UnknownModel(NotFound):
    code = "unknown_model"


def resolve(ref: str) -> ModelVersion:
    """`name` and `name@production` mean the production version; `name@staging`; `name:3`."""
    match = REF_PATTERN.match(ref.strip())
    if not match:
        raise UnknownModel(f"{ref!r} is not a model reference (name, name@staging, name:3)")
    name = match["name"]
    versions = ModelVersion.objects.select_related("registered_model").filter(
        registered_model__name=name
    )
    if not RegisteredModel.objects.filter(name=name).exists():
        raise UnknownModel(f"no model named {name!r}")
    if match["number"]:
        version = versions.filter(number=int(match["number"])).first()
        if version is None:
            raise UnknownModel(f"model {name!r} has no version {match['number']}")
        return version
    stage = match["stage"] or Stage.PRODUCTION
    version = versions.filter(stage=stage).order_by("-number").first()
    if version is None:
        raise UnknownModel(f"model {name!r} has no {stage} version")
    return version


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
    created_by: AbstractBaseUser | None = None,
    source: str = VersionSource.UPLOAD,
    metrics: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    library_versions: dict[str, str] | None = None,
    description: str = "",
) -> ModelVersion:
    """Store an already-validated artifact as the model's next version (stage none)."""
    with transaction.atomic():
        # Lock the model row so two registrations cannot take the same number.
        RegisteredModel.objects.select_for_update().get(pk=model.pk)
        last = model.versions.aggregate(last=Max("number"))["last"] or 0
        version = ModelVersion(
            registered_model=model,
            number=last + 1,
            artifact_format=artifact_format,
            sha256=sha256_of(artifact),
            size=_size_of(artifact),
            estimator_class=estimator_class,
            library_versions=library_versions or {},
            metrics=metrics or {},
            params=params or {},
            source=source,
            created_by=created_by,
            description=description,
        )
        version.artifact.save("artifact", File(artifact), save=False)
        version.save()
    return version


def _size_of(stream: IO[bytes]) -> int:
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    return size
