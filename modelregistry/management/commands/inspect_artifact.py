"""The child process of modelregistry.upload_inspection: inspect the artifact on standard input."""

import json
from typing import Any

from django.core.management.base import BaseCommand

from modelregistry import upload_inspection


class Command(BaseCommand):
    help = "Inspect the artifact on standard input with a memory cap; answer JSON (internal)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("asked", help="JSON: the artifact's format and the settings to use")

    def handle(self, *args: Any, asked: str, **options: Any) -> None:
        upload_inspection.main(json.loads(asked))
