"""ensure_admin (run by `make run`) prints a login that works, or says it cannot."""

import io
from pathlib import Path

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def var_dir(tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    settings.VAR_DIR = tmp_path
    monkeypatch.delenv("ADMIN_USERNAME", raising=False)
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    return tmp_path


def ensure_admin() -> str:
    out = io.StringIO()
    call_command("ensure_admin", stdout=out)
    return out.getvalue().strip()


def printed_password(line: str) -> str:
    prefix = "admin login: admin / "
    assert line.startswith(prefix), line
    return line.removeprefix(prefix)


def test_the_generated_password_is_printed_on_every_run_and_signs_in() -> None:
    first = printed_password(ensure_admin())
    assert printed_password(ensure_admin()) == first
    assert authenticate(username="admin", password=first) is not None
    assert get_user_model().objects.get(username="admin").is_superuser


def test_a_password_given_once_is_the_one_printed_on_later_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ensure_admin()
    monkeypatch.setenv("ADMIN_PASSWORD", "given-once")
    assert printed_password(ensure_admin()) == "given-once"
    monkeypatch.delenv("ADMIN_PASSWORD")
    assert printed_password(ensure_admin()) == "given-once"
    assert authenticate(username="admin", password="given-once") is not None


def test_a_password_changed_since_is_not_printed_but_how_to_reset_it_is() -> None:
    stale = printed_password(ensure_admin())
    admin = get_user_model().objects.get(username="admin")
    admin.set_password("changed-in-the-admin")
    admin.save()

    line = ensure_admin()

    assert stale not in line
    assert "manage.py changepassword admin" in line
    assert authenticate(username="admin", password="changed-in-the-admin") is not None


def test_an_admin_made_elsewhere_gets_no_made_up_password(var_dir: Path) -> None:
    get_user_model().objects.create_superuser("admin", password="made-by-createsuperuser")

    line = ensure_admin()

    assert "manage.py changepassword admin" in line
    assert not (var_dir / "admin-password.txt").exists()
    assert authenticate(username="admin", password="made-by-createsuperuser") is not None


def test_the_password_file_is_readable_by_its_owner_only(var_dir: Path) -> None:
    ensure_admin()
    assert (var_dir / "admin-password.txt").stat().st_mode & 0o777 == 0o600


def test_generated_passwords_are_letters_and_digits_only() -> None:
    # One in 64 began with "-" (read as an option by changepassword, curl -u, …).
    from mlsite.management.commands.ensure_admin import new_password

    passwords = [new_password() for _ in range(2000)]
    assert all(password.isalnum() and len(password) == 16 for password in passwords)
    assert len(set(passwords)) == len(passwords)
