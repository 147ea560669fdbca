"""The one place that hooks the error format, the base-schema policy, what a request may carry and the security
scheme."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Mapping
from http import HTTPStatus

import flask_smorest
import marshmallow as ma
import redis
from flask import Flask, request
from flask_jwt_extended import JWTManager
from flask_limiter.errors import RateLimitExceeded
from flask_smorest.spec.plugins import unicodeconverter2paramschema
from jwt import InvalidTokenError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.routing import UnicodeConverter

from api import access, bodies
from api.pagination import DEFAULT_PAGINATION, MAX_PAGE
from shared.errors import DomainError
from shared.identity import tokens
from shared.redis import get_redis

log = logging.getLogger(__name__)

BEARER_SCHEME = "bearerAuth"
AGENT_SCHEME = "agentToken"
API_DESCRIPTION = (
    "Hypervisor schedules ML workloads onto GPU clusters. Authenticate with `POST /api/v1/auth/login`, "
    "then send `Authorization: Bearer <access_token>`. A login is a session: refresh tokens are single use, "
    "`POST /api/v1/auth/logout` ends the session and `POST /api/v1/auth/logout-all` every session of the "
    "user. Errors are JSON: `code`, `status`, `message` (and `errors` per field for 422)."
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


NUL_TEXT = "Must not contain NUL characters."
NO_NUL_PATTERN = r"^[^\x00]*$"


def _holds_nul(value) -> bool:
    """Whether a string, or any string inside a list or object, holds a NUL (PostgreSQL text cannot)."""
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return True
        elif isinstance(value, Mapping):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list | tuple):
            pending.extend(value)
    return False


class Schema(ma.Schema):
    """Base schema: unknown fields are refused (422), never silently dropped; so is a NUL in any string,
    whatever the field (PostgreSQL text cannot hold one: a 500 from the driver otherwise)."""

    class Meta:
        unknown = ma.RAISE
        ordered = True

    @ma.pre_load
    def _refuse_nul(self, data, **kwargs):
        if isinstance(data, Mapping):
            errors = {name: [NUL_TEXT] for name in data if _holds_nul(name) or _holds_nul(data[name])}
            if errors:
                raise ma.ValidationError(errors)
        return data


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
        if error.code == 400 and errors and "json" in errors and "message" not in data:
            message = "The request body is not valid JSON."
        headers = dict(data.get("headers") or {})
        if error.code == 405 and hasattr(error, "valid_methods") and error.valid_methods:
            headers["Allow"] = ", ".join(error.valid_methods)
        return error_body(error.code, message, errors), error.code, headers


BAD_BODY = (
    f"The body is not valid JSON or Unicode, is nested deeper than {bodies.MAX_DEPTH} levels, or has an "
    f"object or array of more than {bodies.MAX_MEMBERS} members."
)

DENIAL_DESCRIPTIONS = {
    401: "No, invalid or expired token, its session has ended, or the wrong kind of token (a user's token on an "
    "agent route, an agent token anywhere else).",
    403: "Your role in the organization does not allow this.",
    404: "Not found, or not in one of your organizations.",
}


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, with `access`: every view declares who may call it (api/access.py);
    JSON bodies only, bounded (api/bodies.py); pages bounded."""

    DEFAULT_PAGINATION_PARAMETERS = DEFAULT_PAGINATION
    ARGUMENTS_PARSER = bodies.Parser()

    def arguments(self, schema, *, location="json", required=True, **kwargs):
        """flask-smorest's `arguments`; a `json` body must come as JSON (415), and be there if required."""
        parse = super().arguments(schema, location=location, required=required, **kwargs)
        if location != "json":
            return parse

        def decorator(view):
            parsed = parse(view)

            @functools.wraps(parsed)
            def checked(*args, **kwargs):
                bodies.check_body(request, required=required)
                return parsed(*args, **kwargs)

            checked = self.alt_response(400, schema=ErrorSchema, description=BAD_BODY)(checked)
            return self.alt_response(415, schema=ErrorSchema, description=DEFAULT_MESSAGES[415])(checked)

        return decorator

    def paginate(self, pager=None, **kwargs):
        """flask-smorest's `paginate`, with `page` at most MAX_PAGE (a larger offset overflows PostgreSQL's bigint)."""
        paginate = super().paginate(pager, **kwargs)

        def decorator(view):
            view = paginate(view)
            page = view._apidoc["pagination"]["parameters"]["schema"]._declared_fields["page"]
            page.validators.append(ma.validate.Range(max=MAX_PAGE))
            return view

        return decorator

    def access(self, rule: access.Rule):
        """Enforce `rule` before the view, and document its security and its denials in the spec."""

        def decorator(view):
            view = access.guard(rule)(view)
            if rule.credential is not None:
                scheme = AGENT_SCHEME if rule.credential == "agent" else BEARER_SCHEME
                view = self.doc(security=[{scheme: []}])(view)
            for status in rule.denials:
                view = self.alt_response(status, schema=ErrorSchema, description=DENIAL_DESCRIPTIONS[status])(view)
            return view

        return decorator


def init_extensions(app: Flask) -> Api:
    """Attach the API (docs, error format), JWT handling and domain-error mapping to `app`."""
    app.json = bodies.JSONProvider(app)
    api = Api(app, spec_kwargs={"info": {"description": API_DESCRIPTION}})
    api.ma_plugin.converter.add_attribute_function(_exclusive_bounds)
    api.ma_plugin.converter.add_attribute_function(_no_nul_pattern)
    api.register_converter(UnicodeConverter, _string_path_parameter)
    app.url_value_preprocessor(_refuse_nul_in_path)
    api.spec.components.security_scheme(BEARER_SCHEME, {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    api.spec.components.security_scheme(
        AGENT_SCHEME,
        {"type": "http", "scheme": "bearer", "description": "A cluster's agent token (only for /api/v1/agent/*)."},
    )
    jwt = JWTManager(app)
    _register_error_handlers(app, jwt)
    return api


def _exclusive_bounds(self, field: ma.fields.Field, ret: dict, **kwargs) -> dict:
    """OpenAPI 3.0's exclusiveMinimum / exclusiveMaximum for a Range that leaves out its bound (apispec omits them)."""
    bounds = {}
    for validator in field.validators:
        if isinstance(validator, ma.validate.Range):
            if validator.min is not None and not validator.min_inclusive and ret.get("minimum") == validator.min:
                bounds["exclusiveMinimum"] = True
            if validator.max is not None and not validator.max_inclusive and ret.get("maximum") == validator.max:
                bounds["exclusiveMaximum"] = True
    return bounds


# Field metadata of a string whose schema replaces NULs (with U+FFFD) instead of refusing them: no pattern.
NUL_REPLACED = "nul_replaced"


def _no_nul_pattern(self, field: ma.fields.Field, ret: dict, **kwargs) -> dict:
    """The base schema's NUL rule, in the spec: a pattern on each free-form input string."""
    free_form = ret.get("type") == "string" and not {"pattern", "enum", "format"} & ret.keys()
    refused = free_form and not field.dump_only and not field.metadata.get(NUL_REPLACED)
    return {"pattern": NO_NUL_PATTERN} if refused else {}


def _string_path_parameter(converter: UnicodeConverter) -> dict:
    """A `<string:...>` path parameter, with the NUL rule of `_refuse_nul_in_path`."""
    return {**unicodeconverter2paramschema(converter), "pattern": NO_NUL_PATTERN}


def _refuse_nul_in_path(_endpoint, values) -> None:
    """A path segment holding a NUL (`/invites/a%00b`) is a 422, like the same string in a body."""
    errors = {name: [NUL_TEXT] for name, value in (values or {}).items() if _holds_nul(value)}
    if errors:
        flask_smorest.abort(422, message=DEFAULT_MESSAGES[422], errors={"path": errors})


def _register_error_handlers(app: Flask, jwt: JWTManager) -> None:
    """Map domain errors and token problems onto the error format."""

    @app.errorhandler(DomainError)
    def handle_domain_error(error: DomainError):
        headers = dict(error.headers or {})
        if error.status == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        return error_body(error.status, error.message, error.errors), error.status, headers

    def unauthorized(message: str):
        return error_body(401, message), 401, {"WWW-Authenticate": "Bearer"}

    # flask-jwt-extended answers 422 for a malformed token by default; every token problem is a 401 here.
    jwt.unauthorized_loader(lambda reason: unauthorized("Authentication is required: send a valid access token."))
    jwt.invalid_token_loader(lambda reason: unauthorized("The token is invalid."))
    jwt.expired_token_loader(lambda header, payload: unauthorized("The token has expired: refresh it or log in again."))
    jwt.revoked_token_loader(lambda header, payload: unauthorized(tokens.SESSION_ENDED))
    jwt.needs_fresh_token_loader(lambda header, payload: unauthorized("A fresh login is required."))
    jwt.token_verification_failed_loader(lambda header, payload: unauthorized("The token is invalid."))
    jwt.user_lookup_error_loader(lambda header, payload: unauthorized("The token's user no longer exists."))

    _verify_with_current_or_previous_key(app, jwt)

    @jwt.token_in_blocklist_loader
    def _revoked(_header, payload) -> bool:
        return not tokens.session_is_active(get_redis(app.extensions["settings"].redis_url), payload)

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

    @jwt.decode_key_loader
    def _key_for(header: dict, payload: dict) -> str:
        # Called with the raw, unverified token, before flask-jwt-extended fills in defaults for a
        # missing `type` or `jti`: the one place to refuse a token that is not shaped like ours.
        tokens.check_shape(header, payload)
        key = keys.get(header.get("kid"))
        if key is None:
            raise InvalidTokenError("unknown signing key")
        return key
