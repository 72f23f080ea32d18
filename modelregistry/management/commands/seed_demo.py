"""Registers the demo models (iris, wine, diabetes) once; later runs change nothing."""

import time

from django.core.management.base import BaseCommand

from modelregistry import demo


class Command(BaseCommand):
    help = "Train and register demo models on datasets that ship with scikit-learn (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        started = time.perf_counter()
        for name, version in demo.seed():
            if version is None:
                self.stdout.write(f"seed_demo: {name} already registered")
            else:
                shown = ", ".join(f"{k} {v:.3f}" for k, v in version.metrics.items())
                self.stdout.write(f"seed_demo: registered {version.ref} in production ({shown})")
        if demo.seed_training() is not None:
            self.stdout.write("seed_demo: training spec iris-logistic (Retrain now in the admin)")
        self.stdout.write(f"seed_demo: done in {time.perf_counter() - started:.1f} s")
