"""Uploaded artifacts are inspected in a child process with a memory cap.

The restricted unpickler runs no code an artifact names, but the constructors it allows
still take sizes: `list(range(10**10))` is 60 bytes of pickle, and a compressed array of
zeros inflates a thousandfold. Read in the web process, such a file took all its memory.
A child that may use at most MAX_ARTIFACT_MEMORY_BYTES reads it instead and answers what it
found as JSON; its parent never unpickles anything of it. The child is `manage.py
inspect_artifact`, the artifact on its standard input. It costs an upload a few seconds (a
Python with scikit-learn to start), which an upload can afford and a hostile file cannot
take from every other request."""

import dataclasses
import io
import json
import logging
import os
import resource
import signal
import subprocess
import sys
from typing import IO, Any

from django.conf import settings

from mlsite.errors import DomainError

from . import artifacts

logger = logging.getLogger(__name__)

# What the child may raise back, by name.
REFUSALS: dict[str, type[DomainError]] = {
    cls.__name__: cls
    for cls in (
        artifacts.UnsafeArtifact,
        artifacts.UnreadableArtifact,
        artifacts.NotAnEstimator,
        artifacts.NoPredict,
        artifacts.NotFitted,
        artifacts.TextFeatures,
        artifacts.ArtifactTooLarge,
    )
}
SECONDS = 300  # a read that takes longer than this (or this much CPU) is refused
# The parent's own values, which tests and callers may have changed in-process.
PASSED_SETTINGS = ("UNPICKLE_EXTRA_ALLOWED", "MAX_ARTIFACT_BYTES", "MAX_ARTIFACT_MEMORY_BYTES")
# One thread each for the child's numerical libraries: it only reads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def inspect_artifact(stream: IO[bytes], artifact_format: str) -> artifacts.Inspection:
    """artifacts.inspect_artifact in a child process: the same checks and refusals, the
    Inspection without its estimator. Raises ArtifactTooLarge when reading it needs more
    memory than MAX_ARTIFACT_MEMORY_BYTES."""
    artifacts.check_size(stream)  # the cheap refusal, before a process is started
    asked = {
        "format": artifact_format,
        "settings": {name: getattr(settings, name) for name in PASSED_SETTINGS},
    }
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "mlsite.settings"),
        **{name: "1" for name in THREAD_VARIABLES},
    }
    stream.seek(0)
    try:
        child = subprocess.run(
            [sys.executable, "-m", "django", "inspect_artifact", json.dumps(asked)],
            **_input(stream),
            capture_output=True,
            timeout=SECONDS,
            env=environment,
            cwd=settings.BASE_DIR,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise artifacts.UnreadableArtifact(
            f"reading the artifact took longer than {SECONDS} s"
        ) from None
    finally:
        stream.seek(0)
    try:
        answer = json.loads(child.stdout)
    except ValueError:
        logger.warning("artifact inspection ended without an answer: %s", child.stderr[-2000:])
        if child.returncode == -signal.SIGXCPU:
            raise artifacts.UnreadableArtifact(
                f"reading the artifact took more than {SECONDS} s of CPU"
            ) from None
        if child.returncode < 0:  # compiled code past the memory cap can end it so
            raise artifacts.UnreadableArtifact(
                f"the process reading the artifact was ended by signal {-child.returncode} "
                f"(it may need more than MAX_ARTIFACT_MEMORY_BYTES, "
                f"{settings.MAX_ARTIFACT_MEMORY_BYTES} bytes)"
            ) from None
        raise artifacts.UnreadableArtifact(
            f"the process reading the artifact ended ({child.returncode}) without an answer"
        ) from None
    if "refused" in answer:
        refused = answer["refused"]
        raise REFUSALS[refused["kind"]](refused["message"], field=refused.get("field"))
    return artifacts.Inspection(estimator=None, **answer["inspection"])


def _input(stream: IO[bytes]) -> dict[str, Any]:
    """The upload as the child's standard input: a file on disk as it is (a large upload is
    never read into this process), one in memory as bytes."""
    try:
        return {"stdin": stream.fileno()}
    except (AttributeError, OSError, io.UnsupportedOperation):
        return {"input": stream.read()}


def _answer(artifact_format: str, content: bytes) -> dict[str, Any]:
    try:
        inspection = artifacts.inspect_artifact(io.BytesIO(content), artifact_format)
    except MemoryError:
        limit = settings.MAX_ARTIFACT_MEMORY_BYTES
        message = (
            f"reading the artifact needs more than {limit} bytes of memory "
            "(MAX_ARTIFACT_MEMORY_BYTES)"
        )
        return {"refused": {"kind": "ArtifactTooLarge", "message": message}}
    except tuple(REFUSALS.values()) as exc:
        field = getattr(exc, "field", None)
        return {"refused": {"kind": type(exc).__name__, "message": str(exc), "field": field}}
    found = {f.name: getattr(inspection, f.name) for f in dataclasses.fields(inspection)}
    del found["estimator"]
    return {"inspection": found}


def main(asked: dict[str, Any]) -> None:
    """The child's side (manage.py inspect_artifact): read, cap, inspect, answer."""
    for name, value in asked["settings"].items():
        setattr(settings, name, value)
    content = sys.stdin.buffer.read()
    # Capped once the input is in: what reading it makes must fit in the rest. The time cap
    # is its own, so a child whose parent died (a web process restarted) still ends.
    _cap(resource.RLIMIT_AS, settings.MAX_ARTIFACT_MEMORY_BYTES)
    _cap(resource.RLIMIT_CPU, SECONDS)
    _cap(resource.RLIMIT_CORE, 0)  # a child ended by a signal leaves no gigabytes of core
    json.dump(_answer(asked["format"], content), sys.stdout)


def _cap(kind: int, limit: int) -> None:
    """Lower a resource limit, within the hard one a container may already set."""
    _, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(kind, (limit, hard))
