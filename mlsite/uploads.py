"""Upload handlers that read a request body in 1 MiB blocks onto the artifact store's disk.

Django's handlers read 64 KiB at a time; under gunicorn each read of a large body also
copied the server's read-ahead buffer, so a 390 MB upload spent most of its 2.3 s copying
(bench/, py-spy). Blocks of 1 MiB made Django's own parsing faster too (4 MiB was slower).
Files land in FILE_UPLOAD_TEMP_DIR, inside the store (made by mlsite/apps.py), so saving
one is a rename, not a copy.
"""

from django import forms
from django.core.files import uploadhandler

BLOCK_BYTES = 1024 * 1024
CHOOSE_AGAIN = "Choose the file again: a browser does not keep it when the form comes back."


class MemoryFileUploadHandler(uploadhandler.MemoryFileUploadHandler):
    """Small files (FILE_UPLOAD_MAX_MEMORY_SIZE) stay in memory."""

    chunk_size = BLOCK_BYTES


class TemporaryFileUploadHandler(uploadhandler.TemporaryFileUploadHandler):
    """Larger files stream to a temporary file next to where they will be stored."""

    chunk_size = BLOCK_BYTES


def ask_for_the_file_again(form: forms.BaseForm, field: str) -> None:
    """After an error elsewhere on a form, say so on its file field: a browser never refills a
    file input, so it came back silently empty, and fixing the other field alone was then
    refused for a missing file."""
    if form.errors and form.files.get(form.add_prefix(field)) and field not in form.errors:
        form.add_error(field, CHOOSE_AGAIN)
