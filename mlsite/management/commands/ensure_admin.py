"""Creates the admin login for the run command, once; prints how to sign in."""

import os
import secrets
import string
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = (
        "Create a superuser (ADMIN_USERNAME / ADMIN_PASSWORD, or a generated password kept in "
        "VAR_DIR/admin-password.txt) and print its login; ADMIN_PASSWORD resets the password."
    )

    def handle(self, *args: object, **options: object) -> None:
        username = os.environ.get("ADMIN_USERNAME", "admin")
        password_file = Path(settings.VAR_DIR) / "admin-password.txt"
        given = os.environ.get("ADMIN_PASSWORD")
        stored = password_file.read_text().strip() if password_file.exists() else None
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created or given:
            password = given or stored or new_password()
            user.set_password(password)
            user.save()
            store(password_file, password)
        elif stored is not None and user.check_password(stored):
            password = stored
        else:
            # Set or changed elsewhere (the admin, changepassword): the file no longer tells it.
            self.stdout.write(
                f"admin login: {username}, with a password set elsewhere ({password_file} "
                f"does not hold it); to reset it: manage.py changepassword {username}, or run "
                "this again with ADMIN_PASSWORD set"
            )
            return
        self.stdout.write(f"admin login: {username} / {password}")


def new_password() -> str:
    """16 letters and digits: nothing a shell or a command line reads as an option (a
    token_urlsafe password began with "-" one time in 64) or has to quote."""
    return "".join(secrets.choice(ALPHABET) for _ in range(16))


ALPHABET = string.ascii_letters + string.digits


def store(path: Path, password: str) -> None:
    """Keep the password for the next run to print, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(password + "\n")
