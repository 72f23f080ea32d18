"""App configuration for the site: what must be wired once the models are loaded."""

from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import post_delete, post_save


class MlsiteConfig(AppConfig):
    name = "mlsite"
    verbose_name = "Site"

    def ready(self) -> None:
        # Uploads stream into the store's own folder (mlsite/uploads.py); Django's checks
        # want it to exist.
        Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
        # Rows the fresh caches hold (model references, API tokens and their users): any
        # change to them invalidates the caches of every process.
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        from modelregistry.models import ModelVersion, RegisteredModel

        for model in (get_user_model(), Token, ModelVersion, RegisteredModel):
            post_save.connect(_rows_changed, sender=model, dispatch_uid=f"fresh-{model.__name__}")
            post_delete.connect(
                _rows_changed, sender=model, dispatch_uid=f"fresh-d-{model.__name__}"
            )


def _rows_changed(**kwargs: Any) -> None:
    from mlsite import freshcache

    freshcache.rows_changed()
