"""Registers the demo models, once (filled in by the registry)."""

from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Train and register demo models on datasets that ship with scikit-learn."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write("seed_demo: nothing to do yet")
