"""Loading a version's estimator in a worker: sha256 checked first, then a bounded LRU cache."""

import logging
import time
from collections import OrderedDict
from typing import Any

import joblib
from django.conf import settings

from mlsite import metrics
from mlsite.errors import DomainError

from .models import ModelVersion
from .versions import sha256_of

logger = logging.getLogger(__name__)


class ArtifactMismatch(DomainError):
    code = "artifact_mismatch"
    http_status = 409


_cache: OrderedDict[tuple[int, str], Any] = OrderedDict()


def load(version: ModelVersion) -> Any:
    """The version's estimator, from this process's cache or verified from storage."""
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
    with version.artifact.open("rb") as stream:
        if sha256_of(stream) != version.sha256:
            ModelVersion.objects.filter(pk=version.pk).update(
                is_usable=False, unusable_reason="stored artifact does not match its sha256"
            )
            raise ArtifactMismatch(f"artifact of {version.ref} does not match its sha256")
        estimator = joblib.load(stream)
    seconds = time.perf_counter() - started
    metrics.record_model_load(seconds)
    logger.info("loaded %s in %.1f ms", version.ref, seconds * 1000)
    return estimator


def cached_count() -> int:
    return len(_cache)


def clear_cache() -> None:
    _cache.clear()
