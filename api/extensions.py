"""The one place that hooks the error format, the base-schema policy and the security scheme."""

from __future__ import annotations

import hashlib
import logging
from http import HTTPStatus

import flask_smorest
import marshmallow as ma
import redis
from flask import Flask
from flask_jwt_extended import JWTManager
from flask_limiter.errors import RateLimitExceeded
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError

from api import access
from api.pagination import DEFAULT_PAGINATION
from shared.errors import DomainError
from shared.identity import tokens
from shared.redis import get_redis

log = logging.getLogger(__name__)

BEARER_SCHEME = "bearerAuth"
API_DESCRIPTION = (
    "Hypervisor schedules ML workloads onto GPU clusters. Authenticate with `POST /api/v1/auth/login`, "
    "then send `Authorization: Bearer <access_token>`. Errors are JSON: `code`, `status`, `message` "
    "(and `errors` per field for 422)."
)

# A sentence for statuses raised without one of their own (unknown routes, wrong methods, ...).
DEFAULT_MESSAGES = {
    400: "The request could not be understood: check that the body is valid JSON.",
    401: "Authentication is required: send a valid access token.",
    403: "Your role in this organization does not allow this.",
    404: "Not found.",
    405: "This method is not allowed on this path.",
    409: "The request conflicts with the current state.",
    413: "The request body is too large.",
    415: "Send the body as JSON (Content-Type: application/json).",
    422: "The request has invalid fields: see `errors`.",
    429: "Too many requests: wait and try again.",
    500: "Something went wrong on our side; it has been logged.",
    503: "The service is temporarily unavailable.",
}


def error_body(code: int, message: str | None = None, errors: dict | None = None) -> dict:
    """The error format of API.md: code, status phrase, one human message, and per-field errors for 422."""
    body = {"code": code, "status": HTTPStatus(code).phrase, "message": message or DEFAULT_MESSAGES.get(code, "")}
    if errors:
        body["errors"] = errors
    return body


class Schema(ma.Schema):
    """Base schema: unknown fields are refused (422), never silently dropped."""

    class Meta:
        unknown = ma.RAISE
        ordered = True


class ErrorSchema(Schema):
    """Every error body (API.md, Conventions)."""

    code = ma.fields.Integer(required=True, metadata={"description": "The HTTP status code."})
    status = ma.fields.String(required=True, metadata={"description": "The status phrase."})
    message = ma.fields.String(required=True, metadata={"description": "What is wrong, in one sentence."})
    errors = ma.fields.Dict(metadata={"description": "Per-field messages (422)."})


class Api(flask_smorest.Api):
    """flask-smorest's Api, with every error in the same JSON shape."""

    ERROR_SCHEMA = ErrorSchema

    def handle_http_exception(self, error: HTTPException):
        data = getattr(error, "data", None) or {}
        if isinstance(error, InternalServerError):
            original = getattr(error, "original_exception", None)
            if original is not None:
                log.error("unhandled error", exc_info=original)
            message = DEFAULT_MESSAGES[500]
        elif "message" in data:
            message = data["message"]
        elif error.code in (404, 405) or error.code not in DEFAULT_MESSAGES:
            message = error.description or DEFAULT_MESSAGES.get(error.code)
        else:
            message = DEFAULT_MESSAGES[error.code]
        errors = data.get("errors") or data.get("messages")
        if error.code == 400 and errors and "json" in errors:
            message = "The request body is not valid JSON."
        headers = dict(data.get("headers") or {})
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            headers["Allow"] = ", ".join(error.valid_methods)
        return error_body(error.code, message, errors), error.code, headers


DENIAL_DESCRIPTIONS = {
    401: "No, invalid, expired or revoked token.",
    403: "Your role in the organization does not allow this.",
    404: "Not found, or not in one of your organizations.",
}


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, with `access`: every view declares who may call it (api/access.py)."""

    DEFAULT_PAGINATION_PARAMETERS = DEFAULT_PAGINATION

    def access(self, rule: access.Rule):
        """Enforce `rule` before the view, and document its security and its denials in the spec."""

        def decorator(view):
            view = access.guard(rule)(view)
            if rule.credential is not None:
                view = self.doc(security=[{BEARER_SCHEME: []}])(view)
            for status in rule.denials:
                view = self.alt_response(status, schema=ErrorSchema, description=DENIAL_DESCRIPTIONS[status])(view)
            return view

        return decorator


def init_extensions(app: Flask) -> Api:
    """Attach the API (docs, error format), JWT handling and domain-error mapping to `app`."""
    api = Api(app, spec_kwargs={"info": {"description": API_DESCRIPTION}})
    api.spec.components.security_scheme(BEARER_SCHEME, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    jwt = JWTManager(app)
    _register_error_handlers(app, jwt)
    return api


def _register_error_handlers(app: Flask, jwt: JWTManager) -> None:
    """Map domain errors and token problems onto the error format."""

    @app.errorhandler(DomainError)
    def handle_domain_error(error: DomainError):
        return error_body(error.status, error.message, error.errors), error.status, error.headers

    def unauthorized(message: str):
        return error_body(401, message), 401, {"WWW-Authenticate": "Bearer"}

    # flask-jwt-extended answers 422 for a malformed token by default; every token problem is a 401 here.
    jwt.unauthorized_loader(lambda reason: unauthorized("Authentication is required: send a valid access token."))
    jwt.invalid_token_loader(lambda reason: unauthorized("The token is invalid."))
    jwt.expired_token_loader(lambda header, payload: unauthorized("The token has expired: refresh it or log in again."))
    jwt.revoked_token_loader(lambda header, payload: unauthorized("The token has been revoked: log in again."))
    jwt.needs_fresh_token_loader(lambda header, payload: unauthorized("A fresh login is required."))
    jwt.token_verification_failed_loader(lambda header, payload: unauthorized("The token is invalid."))
    jwt.user_lookup_error_loader(lambda header, payload: unauthorized("The token's user no longer exists."))

    _verify_with_current_or_previous_key(app, jwt)

    @jwt.token_in_blocklist_loader
    def _revoked(_header, payload) -> bool:
        return tokens.is_revoked(get_redis(app.extensions["settings"].redis_url), payload["jti"])

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(OperationalError)
    def handle_unavailable(error):
        # A dependency outage is the client's 503 (retry later), not a 500 with a trace.
        log.warning("dependency unavailable: %s", error)
        return error_body(503, "A backing service is unavailable; try again shortly."), 503, {"Retry-After": "5"}

    @app.errorhandler(RateLimitExceeded)
    def handle_rate_limited(error):
        return error_body(429, f"Too many attempts ({error.description}): wait and try again."), 429


def key_id(key: str) -> str:
    """A public, non-reversible name for a signing key, carried in each token's `kid` header."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _verify_with_current_or_previous_key(app: Flask, jwt: JWTManager) -> None:
    """Sign with SECRET_KEY; also accept tokens signed with SECRET_KEY_PREVIOUS, so a key rotation logs no one out."""
    settings = app.extensions["settings"]
    keys = {key_id(settings.secret_key): settings.secret_key}
    if settings.previous_secret_key:
        keys[key_id(settings.previous_secret_key)] = settings.previous_secret_key
    current = key_id(settings.secret_key)

    jwt.additional_headers_loader(lambda _identity: {"kid": current})
    # An unknown kid gets the current key, and so fails verification unless it was signed with it.
    jwt.decode_key_loader(lambda header, _payload: keys.get(header.get("kid"), settings.secret_key))
