"""Shared actors: an owner, a stranger, a staff member."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser, Permission


def make_user(username: str = "owner", *, staff: bool = False, **fields: object) -> AbstractUser:
    user = get_user_model().objects.create_user(
        username=username, password="pw-" + username, is_staff=staff, **fields
    )
    return user


def owner() -> AbstractUser:
    return make_user("owner")


def stranger() -> AbstractUser:
    return make_user("stranger")


def staff() -> AbstractUser:
    """Staff with every registry permission (upload, promote, retrain)."""
    user = make_user("staff", staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="modelregistry"))
    return user


def with_permissions(user: AbstractUser, *codenames: str) -> AbstractUser:
    """The user, granted these permissions (codenames such as view_modelversion)."""
    from django.contrib.auth.models import Permission

    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user
