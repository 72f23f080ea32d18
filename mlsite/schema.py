"""OpenAPI additions: the one error shape, attached to every operation of the schema, the
request bodies that refuse fields they do not know, and the view that serves the schema."""

from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from drf_spectacular.views import SpectacularAPIView
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

ERROR_COMPONENT = "Error"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Every error answers with this one JSON object, validation errors too. `code` is "
        "stable and meant for programs; `detail` is for people; `field` names the one input "
        "to blame (its path, as inputs[1].petal_width), and is left out when none is."
    ),
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for people."},
        "code": {
            "type": "string",
            "description": "Stable machine-readable code: invalid, bad_input, unknown_model, "
            "not_found, result_not_ready, too_large, length_required, "
            "unsupported_media_type, not_acceptable, not_authenticated, permission_denied, "
            "throttled, …",
        },
        "field": {"type": "string", "description": "The input field to blame, when one is."},
    },
    "required": ["detail", "code"],
    "additionalProperties": False,
}

# Which errors any operation may answer with, and when.
COMMON_ERRORS: dict[str, tuple[str, dict[str, Any]]] = {
    # Every view reads ?format= (mlsite.queryparams), so any operation can be a 400.
    "400": (
        "The request is invalid: a query parameter (?format=, ?page=, ?wait=, a filter) or "
        "the body; `field` names the input to blame.",
        {"detail": "format must be one of json", "code": "bad_input", "field": "format"},
    ),
    "401": (
        "Not signed in: send `Authorization: Token <key>` or a session cookie.",
        {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"},
    ),
    "403": (
        "Signed in, but not allowed to do this.",
        {"detail": "Only staff may do this.", "code": "permission_denied"},
    ),
    "406": (
        "No format the Accept header allows can be answered with.",
        {"detail": "Could not satisfy the request Accept header.", "code": "not_acceptable"},
    ),
    "429": (
        "Too many requests: wait for the seconds in the Retry-After header.",
        {"detail": "Request was throttled.", "code": "throttled"},
    ),
    "503": (
        "The database is busy or unreachable: try again after the seconds in Retry-After.",
        {
            "detail": "The database is busy or unreachable; try again shortly (with the same "
            "idempotency_key, a job is never submitted twice).",
            "code": "database_unavailable",
        },
    ),
}
NOT_FOUND = (
    "No such object, or it is not yours (other users' objects answer 404 too).",
    {"detail": "No PredictionJob matches the given query.", "code": "not_found"},
)
# mlsite.api.length_required answers any API request sent chunked.
LENGTH_REQUIRED = (
    "The body was sent chunked, without a Content-Length (length_required).",
    {
        "detail": "send the body with a Content-Length; chunked bodies are not read",
        "code": "length_required",
    },
)
TOO_LARGE = (
    "The body, or a file in it, is over its size limit.",
    {
        "detail": "The request's form data is over the 2,621,440-byte limit; "
        "send large inputs as a file.",
        "code": "body_too_large",
    },
)
UNSUPPORTED_MEDIA_TYPE = (
    "The body's Content-Type is not one this operation reads.",
    {
        "detail": 'Unsupported media type "text/plain" in request.',
        "code": "unsupported_media_type",
    },
)
WRITE_METHODS = {"post", "put", "patch"}

# Request bodies whose serializers call mlsite.api.refuse_unknown_fields: an unknown field is a
# 400, not ignored. (JSON ones only: a form may also carry the browsable API's CSRF token.)
CLOSED_REQUESTS = ["SubmitRowsRequest", "PromoteRequest", "RollbackRequest"]


def add_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: the Error component on every operation, and
    unknown fields refused where the API refuses them."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_COMPONENT] = ERROR_SCHEMA
    for name in CLOSED_REQUESTS:
        schemas[name]["additionalProperties"] = False
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method.startswith("x-") or not isinstance(operation, dict):
                continue
            _add_errors(operation, _errors_for(path, method, operation))
    return result


def _errors_for(
    path: str, method: str, operation: dict[str, Any]
) -> dict[str, tuple[str, dict[str, Any]]]:
    errors = dict(COMMON_ERRORS)
    if "{" in path:
        errors["404"] = NOT_FOUND
    if method in WRITE_METHODS:
        errors["411"] = LENGTH_REQUIRED
    if "requestBody" in operation:  # only an operation that reads its body refuses one
        errors["413"] = TOO_LARGE
        errors["415"] = UNSUPPORTED_MEDIA_TYPE
    return errors


def _add_errors(operation: dict[str, Any], errors: dict[str, tuple[str, dict[str, Any]]]) -> None:
    """Add the common errors, and give the Error shape to those the view declared with only a
    description (its 409s, say)."""
    responses = operation.setdefault("responses", {})
    for status, (description, example) in errors.items():
        response = responses.setdefault(status, {"description": description})
        response.setdefault("content", _error_content(example))
    for status, response in responses.items():
        if int(status) >= 400:
            response.setdefault("content", _error_content())


def _error_content(example: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"}}
    if example is not None:
        body["example"] = example
    return {"application/json": body}


class SchemaView(SpectacularAPIView):
    """drf-spectacular's schema view, without its ?version= and with errors in JSON.

    The API has one version; spectacular wrote the query's value into the Content-Disposition
    header, where a line break or a NUL byte was a 500 for anyone. Its renderers are YAML and
    OpenAPI JSON, so a bad ?format= was answered in YAML.
    """

    _made: dict[str, Any] | None = None  # the schema, once made: the same for every caller

    def _get_version_parameter(self, request: Request) -> None:
        return None

    def _get_schema_response(self, request: Request) -> Response:
        """The schema made once per process (it took 0.1 s of CPU per request, for anyone)
        and kept until a setting changes (tests)."""
        if SchemaView._made is None:
            generator = self.generator_class(urlconf=self.urlconf, patterns=self.patterns)
            SchemaView._made = generator.get_schema(request=request, public=self.serve_public)
        return Response(
            data=SchemaView._made,
            headers={
                "Content-Disposition": f'inline; filename="{self._get_filename(request, None)}"'
            },
        )

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        if response.status_code >= 400:
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)


@receiver(setting_changed)
def _forget_schema(**kwargs: Any) -> None:
    SchemaView._made = None
