"""Creates the admin login for the run command, once; prints how to sign in."""

import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a superuser (ADMIN_USERNAME / ADMIN_PASSWORD, or a generated password)."

    def handle(self, *args: object, **options: object) -> None:
        import os

        username = os.environ.get("ADMIN_USERNAME", "admin")
        password_file = Path(settings.VAR_DIR) / "admin-password.txt"
        password = os.environ.get("ADMIN_PASSWORD") or self._stored_or_new(password_file)
        user, created = get_user_model().objects.get_or_create(
            username=username, defaults={"is_staff": True, "is_superuser": True}
        )
        if created or os.environ.get("ADMIN_PASSWORD"):
            user.set_password(password)
            user.save()
        self.stdout.write(f"admin login: {username} / {password}")

    def _stored_or_new(self, path: Path) -> str:
        if path.exists():
            return path.read_text().strip()
        password = secrets.token_urlsafe(12)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(password + "\n")
        path.chmod(0o600)
        return password
