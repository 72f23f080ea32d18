"""App configuration for the model registry."""

from django.apps import AppConfig


class ModelRegistryConfig(AppConfig):
    name = "modelregistry"
    verbose_name = "Model registry"
