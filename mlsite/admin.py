"""The admin's Tokens page: staff see and make only their own API token; superusers, all."""

from typing import Any, cast

from django.contrib import admin
from django.contrib.auth.models import User
from django.db.models import ForeignKey, QuerySet
from django.http import HttpRequest
from rest_framework.authtoken.admin import TokenAdmin
from rest_framework.authtoken.models import TokenProxy

admin.site.unregister(TokenProxy)


@admin.register(TokenProxy)
class OwnTokenAdmin(TokenAdmin):
    """DRF's page listed every user's key to whoever may view tokens, and made a token for any
    user for whoever may add one: a key is a login, so either let staff act as a superuser
    over the API. The README sends users here for their own token."""

    def get_queryset(self, request: HttpRequest) -> QuerySet[TokenProxy]:
        tokens = super().get_queryset(request)
        return tokens if request.user.is_superuser else tokens.filter(user_id=request.user.pk)

    def formfield_for_foreignkey(
        self, db_field: ForeignKey, request: HttpRequest, **kwargs: Any
    ) -> Any:
        if db_field.name == "user" and not request.user.is_superuser:
            kwargs["queryset"] = User.objects.filter(pk=cast(User, request.user).pk)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
