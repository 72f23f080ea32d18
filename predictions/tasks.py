"""Celery tasks for prediction jobs: ids in, one domain function call."""
