"""Domain errors of the admin API: each carries its HTTP status and the admin-facing message."""

from __future__ import annotations


class ApiError(Exception):
    status = 400

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.message = message
        self.errors = errors or []

    def body(self) -> dict:
        return {"message": self.message, "errors": self.errors}


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class PayloadTooLarge(ApiError):
    status = 413


class TooManyRequests(ApiError):
    status = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class UnprocessableEntity(ApiError):
    status = 422


class ServiceUnavailable(ApiError):
    status = 503


def field_error(cls: type[ApiError], name: str, reason: str, message: str | None = None) -> ApiError:
    return cls(message or reason, [{"name": name, "reason": reason}])
