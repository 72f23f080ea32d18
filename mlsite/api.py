"""API plumbing shared by the apps: the one exception handler and common permissions."""

from typing import Any

from django.http import Http404
from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView, exception_handler

from .errors import DomainError


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"detail": str(exc), "code": exc.code}
        if exc.field:
            body["field"] = exc.field
        return Response(body, status=exc.http_status)
    response = exception_handler(exc, context)  # DRF's own: validation, auth, 404, throttle
    if response is not None and isinstance(response.data, dict) and "code" not in response.data:
        response.data["code"] = _code_of(exc)
    return response


def _code_of(exc: Exception) -> str:
    if isinstance(exc, Http404):
        return "not_found"
    if isinstance(exc, PermissionDenied):
        return "permission_denied"
    codes = getattr(exc, "default_code", None)
    return codes if isinstance(codes, str) else "invalid"


class IsStaff(BasePermission):
    message = "Only staff may do this."

    def has_permission(self, request: Request, view: APIView) -> bool:
        return bool(request.user and request.user.is_staff)
