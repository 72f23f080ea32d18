"""How the API reads ?format=, ?page= and filters: a value that can never be right is a 400,
and a list's filters apply to lists only.

Apart from mlsite.api because DRF imports these classes (named in settings) while it builds
APIView, so this module must not import rest_framework.views.
"""

from collections.abc import Iterable
from typing import Any

from django.core.paginator import Paginator
from django.db.models import QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.settings import api_settings

from .errors import BadInput


class ListFilters(DjangoFilterBackend):
    """django-filter's backend for list actions alone. DRF's get_object() filters its queryset
    too, so ?status=failed or ?model=wine on a succeeded iris job's own address (its result,
    its cancel) answered 404 as if the job did not exist."""

    def filter_queryset(self, request: Request, queryset: QuerySet, view: Any) -> QuerySet:
        if getattr(view, "action", "list") != "list":
            return queryset
        return super().filter_queryset(request, queryset, view)


class FormatNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, but ?format= naming a format the view cannot render is a 400 that
    lists the ones it can (DRF answers 404, as if the job did not exist)."""

    def filter_renderers(
        self, renderers: Iterable[BaseRenderer], format: str
    ) -> list[BaseRenderer]:
        renderers = list(renderers)
        kept = [renderer for renderer in renderers if renderer.format == format]
        if not kept:
            # dict.fromkeys: the schema view has two renderers of each format
            offered = ", ".join(dict.fromkeys(r.format for r in renderers if r.format != "api"))
            field = api_settings.URL_FORMAT_OVERRIDE or "format"
            raise BadInput(f"format must be one of {offered}", field=field)
        return kept


class PageNumbers(PageNumberPagination):
    """DRF's page numbers, but a page that can never exist (abc, 0, -1) is a 400; a page past
    the end stays DRF's 404 (it may exist once there are more jobs)."""

    def get_page_number(self, request: Request, paginator: Paginator) -> int | str:
        raw = request.query_params.get(self.page_query_param)
        is_number = raw is not None and raw.isascii() and raw.isdigit() and int(raw) > 0
        if raw and raw not in self.last_page_strings and not is_number:
            raise BadInput(
                f"page must be a number from 1, or {' or '.join(self.last_page_strings)}",
                field=self.page_query_param,
            )
        return super().get_page_number(request, paginator)  # type: ignore[no-any-return]
