"""API plumbing shared by the apps: the one exception handler, the JSON answers Django gives
for the API (400, 404, 411, 413, 500), and common permissions."""

import ipaddress
import logging
import math
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views import defaults
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle
from rest_framework.views import APIView, exception_handler

from . import broker
from .errors import BodyTooLarge, DomainError
from .parsers import StrictJSONParser
from .unavailable import is_outage

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if is_outage(exc):
        # SQLite locked past its busy timeout, PostgreSQL restarting: the same request will
        # do once the database answers (a job submitted with an idempotency_key, once).
        logger.warning("database unavailable for an API request: %s", exc)
        detail = (
            "The database is busy or unreachable; try again shortly (with the same "
            "idempotency_key, a job is never submitted twice)."
        )
        unavailable = {"detail": detail, "code": "database_unavailable"}
        return Response(unavailable, status=503, headers={"Retry-After": "5"})
    if isinstance(exc, DomainError):
        body: dict[str, Any] = {"detail": str(exc), "code": exc.code}
        if exc.field:
            body["field"] = exc.field
        return Response(body, status=exc.http_status)
    response = exception_handler(exc, context)  # DRF's own: validation, auth, 404, throttle
    if response is not None and isinstance(exc, ValidationError):
        response.data = first_error(exc.detail)
    elif response is not None and isinstance(response.data, dict) and "code" not in response.data:
        response.data["code"] = _code_of(exc)
    return response


def first_error(detail: Any, field: str = "") -> dict[str, Any]:
    """DRF's validation errors ({field: [message, …]}, nested for lists and objects) as our
    one error shape: the first message, code invalid, and the path of its field
    (inputs[1].x); no field for an error of the whole body."""
    if isinstance(detail, dict):
        for name, inner in detail.items():
            if inner:
                return first_error(inner, _field_path(field, name))
    elif isinstance(detail, list):
        for index, inner in enumerate(detail):
            if isinstance(inner, dict | list):
                if inner:  # a list serializer's rows: {} for each row that was fine
                    return first_error(inner, f"{field}[{index}]")
            else:
                return first_error(inner, field)
    body = {"detail": str(detail) or "Invalid input.", "code": "invalid"}
    return {**body, "field": field} if field else body


def _field_path(field: str, name: object) -> str:
    if name == api_settings.NON_FIELD_ERRORS_KEY:
        return field
    if isinstance(name, int) or str(name).isdecimal():
        return f"{field}[{name}]"
    return f"{field}.{name}" if field else str(name)


def _code_of(exc: Exception) -> str:
    if isinstance(exc, Http404):
        return "not_found"
    if isinstance(exc, PermissionDenied):
        return "permission_denied"
    codes = getattr(exc, "default_code", None)
    return codes if isinstance(codes, str) else "invalid"


def refuse_unknown_fields(serializer: Serializer) -> None:
    """Raise a ValidationError naming fields the serializer does not declare, or fields sent
    more than once: a misspelt option, or a second file, must not be ignored in silence."""
    # The browsable API's HTML forms send their CSRF token as a field.
    unknown = set(serializer.initial_data) - set(serializer.fields) - {"csrfmiddlewaretoken"}
    if unknown:
        raise ValidationError({name: ["Unknown field."] for name in sorted(unknown)})
    # A form field sent twice (two files, say) keeps only its last value in DRF.
    lists = getattr(serializer.initial_data, "lists", None)
    repeated = {name: len(values) for name, values in lists() if len(values) > 1} if lists else {}
    if repeated:
        raise ValidationError(
            {name: [f"Give one value, not {count}."] for name, count in sorted(repeated.items())}
        )


def length_required(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable:
    """Middleware: an API request with a body but no Content-Length is a 411.

    gunicorn hands a chunked request to Django as Transfer-Encoding with no CONTENT_LENGTH,
    and Django's WSGI request then reads its body as empty: a job would be refused for a
    missing model, or a form posted empty. Clients can always send the length instead.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        meta = request.META
        if (
            request.path_info.startswith(API_PREFIX)
            and meta.get("HTTP_TRANSFER_ENCODING")
            and not meta.get("CONTENT_LENGTH")
        ):
            return JsonResponse(
                {
                    "detail": "send the body with a Content-Length; chunked bodies are not read",
                    "code": "length_required",
                },
                status=411,
            )
        return get_response(request)

    return middleware


def json_not_found(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable:
    """Middleware: an address under /api/ that no route matches answers JSON 404.

    Here rather than in handler404, which Django skips while DEBUG is on (as `make run` has
    it) for its technical page. DRF's own 404s are Responses in the negotiated format and
    pass as they are.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        response = get_response(request)
        if (
            response.status_code == 404
            and request.path_info.startswith(API_PREFIX)
            and not isinstance(response, Response)
        ):
            return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
        return response

    return middleware


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 400 (a body it refused to read): JSON under /api/, the page elsewhere; a body
    over DATA_UPLOAD_MAX_MEMORY_SIZE (an admin form's pasted rows, say) is a 413 naming it."""
    if isinstance(exception, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
        detail = (
            f"The request's form data is over the {limit:,}-byte limit; "
            "send large inputs as a file."
        )
        if request.path_info.startswith(API_PREFIX):
            return JsonResponse({"detail": detail, "code": BodyTooLarge.code}, status=413)
        return HttpResponse(f"<h1>Request too large (413)</h1><p>{detail}</p>", status=413)
    if request.path_info.startswith(API_PREFIX):
        return JsonResponse(
            {"detail": _refused_because(exception), "code": "bad_request"}, status=400
        )
    return defaults.bad_request(request, exception)


def _refused_because(exception: Exception) -> str:
    """Django's reason in words, where it is one a client can act on."""
    if isinstance(exception, TooManyFieldsSent):
        return (
            f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:,} form fields; "
            "send rows as JSON or as a file."
        )
    if isinstance(exception, TooManyFilesSent):
        return f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES:,} files."
    return "Bad request."


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's 500 (an error outside DRF's handler): JSON under /api/, the page elsewhere."""
    if request.path_info.startswith(API_PREFIX):
        return JsonResponse({"detail": "Server error.", "code": "server_error"}, status=500)
    return defaults.server_error(request)


def staff_with(permission: str) -> type[BasePermission]:
    """A permission class: staff who also hold the given permission (app_label.codename)."""

    class StaffWithPermission(BasePermission):
        message = f"Only staff with the {permission} permission may do this."

        def has_permission(self, request: Request, view: APIView) -> bool:
            return bool(request.user.is_staff and request.user.has_perm(permission))

    return StaffWithPermission


def refuse_body_over(request: Request, limit: int) -> None:
    """Refuse a body its Content-Length says is over `limit` bytes before reading it (413):
    Django's own limits read a file part whole before the view can look at it."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > limit:
        raise BodyTooLarge(f"request body is {length} bytes, more than {limit}")


class PasswordRateThrottle(SimpleRateThrottle):
    """Password checks per client address, at LOGIN_THROTTLE_RATE: an API token, the admin's
    and the browsable API's sign-in count together. The API's own throttle (1000 a second)
    let anyone try passwords as fast as the server could check them, and the sign-in pages
    had none.

    The count lives in Redis, so every web process and thread counts against one allowance
    (in each process's own cache, a guesser had an allowance per process, and threads that
    read the count at once were each let through). While Redis is away, each process counts
    in its own cache.
    """

    scope = "password"
    _seconds_left: float | None = None

    def get_rate(self) -> str:
        return str(settings.LOGIN_THROTTLE_RATE)  # read per request: tests override it

    def get_cache_key(self, request: Request, view: APIView) -> str:
        return self.cache_format % {
            "scope": self.scope,
            "ident": _one_client(self.get_ident(request)),
        }

    def allow_request(self, request: Request, view: APIView) -> bool:
        key = PASSWORD_ATTEMPTS_KEY.format(_one_client(self.get_ident(request)))
        limit, window = self.parse_rate(self.get_rate())
        if limit is None or window is None:  # no rate, no throttle (DRF's own rule)
            return True
        now = self.timer()
        try:
            count_attempt = broker.client().register_script(COUNT_ATTEMPT)
            seconds_left = count_attempt([key], [now, window, limit, f"{now}:{uuid.uuid4().hex}"])
        except broker.UNAVAILABLE:
            logger.warning("password throttle: Redis unavailable, counting in this process")
            return super().allow_request(request, view)
        self._seconds_left = None if seconds_left is None else float(seconds_left)
        return self._seconds_left is None

    def wait(self) -> float | None:
        if self._seconds_left is not None:
            return self._seconds_left
        return super().wait()


PASSWORD_ATTEMPTS_KEY = "mlsite:password-attempts:{}"  # noqa: S105 - a key, not a secret
# One client's recent password checks, a sorted set of their times: trimmed to the window,
# counted, and the attempt added in one step, or, past the allowance, the seconds until the
# oldest leaves the window. Redis runs a script whole, so no two checks read the same count.
COUNT_ATTEMPT = """
    local key, now, window = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    if redis.call('ZCARD', key) >= tonumber(ARGV[3]) then
        local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')[2]
        return tostring((tonumber(oldest) or now) + window - now)
    end
    redis.call('ZADD', key, now, ARGV[4])
    redis.call('EXPIRE', key, math.ceil(window))
    return false
"""


def _without_port(address: str) -> str:
    """ "1.2.3.4:5678" and "[2001:db8::1]:5678", as some proxies write X-Forwarded-For, without
    the port (each port a fresh allowance, else)."""
    if address.startswith("["):
        return address[1:].partition("]")[0]
    if address.count(":") == 1:
        return address.partition(":")[0]
    return address


def _one_client(address: str) -> str:
    """The address a throttle counts: an IPv6 client's whole /64, which one host is commonly
    given and could take a fresh address from for every guess."""
    try:
        parsed = ipaddress.ip_address(_without_port(address))
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:  # ::ffff:a.b.c.d is an IPv4 client
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed)


def throttle_password_posts(
    view: Callable[..., HttpResponseBase],
) -> Callable[..., HttpResponseBase]:
    """A Django sign-in view whose POSTs count against PasswordRateThrottle (429 past it)."""

    @wraps(view)
    def throttled(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        throttle = PasswordRateThrottle()
        # Wrapped for DRF's throttle, which reads only the address; the body stays unread.
        if request.method == "POST" and not throttle.allow_request(Request(request), APIView()):
            seconds = math.ceil(throttle.wait() or 1)
            answer = HttpResponse(
                f"Too many sign-in attempts from this address; try again in {seconds} s.\n",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
            answer["Retry-After"] = str(seconds)
            return answer
        return view(request, *args, **kwargs)

    return throttled


class ObtainToken(ObtainAuthToken):
    """DRF's token view, reading JSON like every other endpoint: its own parser list held
    DRF's plain JSON parser, which turned a deeply nested body into a 500 for anyone."""

    parser_classes = (StrictJSONParser, FormParser, MultiPartParser)
    throttle_classes = (PasswordRateThrottle, UserRateThrottle)
