"""The model registry: registered models, their versions and stages, and retraining."""
