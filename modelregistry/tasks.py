"""Celery tasks for the registry: ids in, one domain function call."""
