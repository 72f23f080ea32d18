"""Admin for the registry; the training screens live in training_admin."""

from . import (
    registry_admin,  # noqa: F401 - registers RegisteredModel, ModelVersion
    training_admin,  # noqa: F401 - registers Dataset, TrainingSpec, TrainingRun
)
