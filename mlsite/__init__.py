"""The Django project: settings, Celery app, URLs and cross-app plumbing."""

from .celery import app as celery_app

__all__ = ["celery_app"]
