"""What follows a job row's deletion: its files go too, once the delete has committed."""

from functools import partial
from typing import Any

from django.db import transaction

from . import retention
from .models import PredictionJob


def delete_files_of_deleted_job(instance: PredictionJob, using: str, **kwargs: Any) -> None:
    """Whoever deletes a job (the admin's delete, its owner's cascade) leaves no files behind.

    After the commit, as retention does: a delete rolled back keeps a row with its files.
    """
    names = [
        name
        for name in (instance.input_file.name, instance.result_file.name, instance.error_file.name)
        if name
    ]
    transaction.on_commit(partial(retention.delete_job_files, instance.pk, names), using=using)
