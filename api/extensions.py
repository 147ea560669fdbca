"""The one place that hooks the error format, the base-schema policy and the security scheme."""

from __future__ import annotations

import logging
from http import HTTPStatus

import flask_smorest
import marshmallow as ma
from flask import Flask
from flask_jwt_extended import JWTManager
from werkzeug.exceptions import HTTPException, InternalServerError

from shared.errors import DomainError

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


class Api(flask_smorest.Api):
    """flask-smorest's Api, with every error in the same JSON shape."""

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


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint; one subclass so blueprint-wide policy has a home."""


class Schema(ma.Schema):
    """Base schema: unknown fields are refused (422), never silently dropped."""

    class Meta:
        unknown = ma.RAISE
        ordered = True


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
        return error_body(error.status, error.message, error.errors), error.status

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
