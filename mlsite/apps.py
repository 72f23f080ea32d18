"""App configuration for the site: what must be wired once the models are loaded."""

from pathlib import Path
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.db.models.signals import m2m_changed, post_delete, post_save


class MlsiteConfig(AppConfig):
    name = "mlsite"
    verbose_name = "Site"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers them)

        # Uploads stream into the store's own folder (mlsite/uploads.py); Django's checks
        # want it to exist.
        Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)
        # Rows the fresh caches hold (model references, API tokens and their users): any
        # change to them invalidates the caches of every process.
        from django.contrib.auth import get_user_model
        from django.contrib.auth.models import Group, Permission
        from rest_framework.authtoken.models import Token

        from modelregistry.models import ModelVersion, RegisteredModel

        for model in (get_user_model(), Token, ModelVersion, RegisteredModel, Group, Permission):
            post_save.connect(_rows_changed, sender=model, dispatch_uid=f"fresh-{model.__name__}")
            post_delete.connect(
                _rows_changed, sender=model, dispatch_uid=f"fresh-d-{model.__name__}"
            )
        # A cached user keeps the permissions it was first asked about (Django caches them on
        # the user object), and a change of groups or permissions saves no user row: a
        # permission taken away went on answering for up to FRESH_CACHE_SECONDS.
        user_model = get_user_model()
        for relation in (user_model.groups, user_model.user_permissions, Group.permissions):
            through = relation.through
            m2m_changed.connect(
                _links_changed, sender=through, dispatch_uid=f"fresh-m2m-{through.__name__}"
            )


def _rows_changed(**kwargs: Any) -> None:
    from mlsite import freshcache

    freshcache.rows_changed()


def _links_changed(action: str, **kwargs: Any) -> None:
    if action.startswith("post_"):  # each change also sends a pre_ signal first
        _rows_changed()
