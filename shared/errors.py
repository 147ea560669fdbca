"""Domain errors, raised by service functions and mapped to HTTP statuses in one place (api/extensions.py)."""


class DomainError(Exception):
    """A request the domain refuses; `message` is one human sentence."""

    status = 400
    headers: dict[str, str] = {}

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


class LimitReached(Conflict):
    """A configured limit on how many of something a tenant may have (409): delete one to make room."""


class QueueFull(DomainError):
    """A configured limit on queued work (429): retry once some of it has started or been cancelled."""

    status = 429
    headers = {"Retry-After": "10"}
