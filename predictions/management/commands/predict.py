"""`manage.py predict`: submit a CSV or Parquet file, wait with a progress bar, save the result."""

from argparse import ArgumentParser, Namespace

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
        status = client.run(Namespace(**options), self.stdout, self.stderr)
        if status:
            raise CommandError(f"predict failed (exit status {status})", returncode=status)
