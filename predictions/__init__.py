"""Prediction jobs: submission, scoring by Celery workers, results."""
