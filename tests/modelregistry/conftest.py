"""Fixtures for the registry tests."""

from pathlib import Path

import pytest


@pytest.fixture
def private_artifacts(settings, tmp_path: Path) -> Path:
    """An artifact store of this test's own (not visible to worker processes)."""
    root = tmp_path / "artifacts-root"
    settings.ARTIFACT_ROOT = root
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
    }
    return root
