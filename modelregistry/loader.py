"""Loading a version's estimator in a worker: sha256 checked first, then a bounded LRU cache."""

import hashlib
import io
import logging
import time
from collections import OrderedDict
from typing import Any

from django.conf import settings

from mlsite import freshcache, metrics
from mlsite.errors import DomainError

from . import artifacts
from .models import ModelVersion

logger = logging.getLogger(__name__)


class ArtifactMismatch(DomainError):
    code = "artifact_mismatch"
    http_status = 409


_cache: OrderedDict[tuple[int, str], Any] = OrderedDict()


def load(version: ModelVersion) -> Any:
    """The version's estimator, from this process's cache or verified from storage.

    Raises ArtifactMismatch (and marks the version unusable) when the stored bytes no longer
    match the sha256 recorded at registration, and artifacts.ArtifactRefused when they name
    a type the restricted unpickler does not allow. A version already marked unusable (by
    another worker's check, say) raises ArtifactMismatch even when its model is cached here.
    """
    if not version.is_usable:
        raise ArtifactMismatch(f"{version.ref} is unusable ({version.unusable_reason})")
    return _cached_or_verified(version)


def _cached_or_verified(version: ModelVersion) -> Any:
    key = (version.pk, version.sha256)
    if key in _cache:
        _cache.move_to_end(key)
        return _cache[key]
    estimator = _load_verified(version)
    _cache[key] = estimator
    while len(_cache) > settings.MODEL_CACHE_SIZE:
        _cache.popitem(last=False)
    return estimator


def _load_verified(version: ModelVersion) -> Any:
    started = time.perf_counter()
    # Read once and unpickle those same bytes, so the file cannot change between the
    # hash check and the load.
    try:
        with version.artifact.open("rb") as stream:
            data = stream.read()
    except OSError as exc:
        _mark_usable(version, False, f"stored artifact cannot be read: {exc}")
        raise ArtifactMismatch(f"artifact of {version.ref} cannot be read") from None
    if hashlib.sha256(data).hexdigest() != version.sha256:
        _mark_usable(version, False, "stored artifact does not match its sha256")
        raise ArtifactMismatch(f"artifact of {version.ref} does not match its sha256")
    estimator = artifacts.read_estimator(io.BytesIO(data), version.artifact_format)
    seconds = time.perf_counter() - started
    metrics.record_model_load(seconds)
    logger.info("loaded %s in %.1f ms", version.ref, seconds * 1000)
    return estimator


def _mark_usable(version: ModelVersion, is_usable: bool, reason: str = "") -> None:
    ModelVersion.objects.filter(pk=version.pk).update(is_usable=is_usable, unusable_reason=reason)
    version.is_usable, version.unusable_reason = is_usable, reason
    # update() sends no post_save: without this, processes that cached the version (resolve()
    # in the web, running's versions in the predict worker) would go on using it as it was.
    freshcache.rows_changed()


def verify(version: ModelVersion) -> dict[str, Any]:
    """Load the version afresh (not from the cache) and report; a good one is usable again."""
    _cache.pop((version.pk, version.sha256), None)
    try:
        estimator = _cached_or_verified(version)
    except DomainError as exc:
        return {"ref": version.ref, "ok": False, "code": exc.code, "detail": str(exc)}
    if not version.is_usable:
        _mark_usable(version, True)
    return {"ref": version.ref, "ok": True, "estimator": type(estimator).__name__}


def cached_count() -> int:
    return len(_cache)


def clear_cache() -> None:
    _cache.clear()
