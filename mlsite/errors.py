"""Domain errors: each carries a stable code and the HTTP status the API answers with."""


class DomainError(Exception):
    code = "error"
    http_status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(DomainError):
    code = "not_found"
    http_status = 404


class Conflict(DomainError):
    code = "conflict"
    http_status = 409


class BadInput(DomainError):
    code = "bad_input"
    http_status = 400


class TooLarge(DomainError):
    code = "too_large"
    http_status = 413


class BodyTooLarge(TooLarge):
    """A request body over its limit, whichever check caught it: the jobs view's own, from
    Content-Length, or Django's, as it read form data (mlsite.api.bad_request)."""

    code = "body_too_large"
