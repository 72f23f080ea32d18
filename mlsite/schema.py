"""OpenAPI additions: the one error shape, attached to every operation of the schema."""

from typing import Any

ERROR_COMPONENT = "Error"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Every error answers with this shape. `code` is stable and meant for programs; "
        "`detail` is for people. A validation error lists the messages of each bad input "
        "field under the field's name instead of `detail`."
    ),
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, for people."},
        "code": {
            "type": "string",
            "description": "Stable machine-readable code: bad_input, unknown_model, "
            "not_found, conflict, too_large, invalid, not_authenticated, "
            "permission_denied, throttled, …",
        },
        "field": {"type": "string", "description": "The input field to blame, when one is."},
    },
    "required": ["code"],
    "additionalProperties": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Validation messages of one input field.",
    },
}

# Which errors any operation may answer with, and when.
COMMON_ERRORS: dict[str, tuple[str, dict[str, Any]]] = {
    "401": (
        "Not signed in: send `Authorization: Token <key>` or a session cookie.",
        {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"},
    ),
    "403": (
        "Signed in, but not allowed to do this.",
        {"detail": "Only staff may do this.", "code": "permission_denied"},
    ),
    "429": (
        "Too many requests: wait for the seconds in the Retry-After header.",
        {"detail": "Request was throttled.", "code": "throttled"},
    ),
}
BAD_INPUT = (
    "The request is invalid; `field` or the field names say which input.",
    {"detail": "row 3 has no value for petal_width", "code": "bad_input", "field": "rows"},
)
NOT_FOUND = (
    "No such object, or it is not yours (other users' objects answer 404 too).",
    {"detail": "No PredictionJob matches the given query.", "code": "not_found"},
)
WRITE_METHODS = {"post", "put", "patch"}


def add_error_responses(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular post-processing hook: the Error component on every operation."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas[ERROR_COMPONENT] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if method.startswith("x-") or not isinstance(operation, dict):
                continue
            _add_errors(operation, _errors_for(path, method))
    return result


def _errors_for(path: str, method: str) -> dict[str, tuple[str, dict[str, Any]]]:
    errors = dict(COMMON_ERRORS)
    if method in WRITE_METHODS or "{" not in path:  # lists take query filters too
        errors["400"] = BAD_INPUT
    if "{" in path:
        errors["404"] = NOT_FOUND
    return errors


def _add_errors(operation: dict[str, Any], errors: dict[str, tuple[str, dict[str, Any]]]) -> None:
    responses = operation.setdefault("responses", {})
    for status, (description, example) in errors.items():
        response = responses.setdefault(status, {"description": description})
        response.setdefault(
            "content",
            {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{ERROR_COMPONENT}"},
                    "example": example,
                }
            },
        )
