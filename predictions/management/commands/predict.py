"""`manage.py predict`: submit a CSV or Parquet file, wait with a progress bar, save the result."""

from argparse import ArgumentParser, Namespace
from typing import IO, cast

from django.core.management.base import BaseCommand, CommandError

from predictions import client


class Command(BaseCommand):
    help = (
        "Score a file through the jobs API: python manage.py predict --model iris "
        "--file rows.csv --out result.csv [--token … | MLSITE_TOKEN] [--url … | MLSITE_URL]"
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        client.build_parser(parser)

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.ending = self.stderr.ending = ""  # the progress bar writes its own ends
        # OutputWrapper passes everything but write through to the stream it wraps.
        out, err = cast(IO[str], self.stdout), cast(IO[str], self.stderr)
        try:
            status = client.run(Namespace(**options), out, err)
        finally:
            # Django writes a CommandError's line through these same wrappers once we raise.
            self.stdout.ending = self.stderr.ending = "\n"
        if status:
            raise CommandError(f"predict failed (exit status {status})", returncode=status)
