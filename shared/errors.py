"""Domain errors, raised by service functions and mapped to HTTP statuses in one place (api/extensions.py)."""


class DomainError(Exception):
    """A request the domain refuses; `message` is one human sentence."""

    status = 400

    def __init__(self, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class Unauthorized(DomainError):
    status = 401


class Forbidden(DomainError):
    status = 403


class NotFound(DomainError):
    status = 404


class Conflict(DomainError):
    status = 409


class Invalid(DomainError):
    """Input that is well-formed but cannot be accepted (422)."""

    status = 422
