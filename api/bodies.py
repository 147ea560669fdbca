"""What a request body may be: JSON, bounded in nesting and in members per object or array, valid Unicode.

MAX_CONTENT_LENGTH caps the bytes; these bounds cap the shape, so that no body of allowed size can
exhaust the parser's recursion (a RecursionError, i.e. a 500) or make validation build an error per
member of a huge object or array. Both the app's JSON provider (request.get_json, the rate limiter's
key functions) and the webargs parser behind `blp.arguments` load bodies through `load_json`.
"""

from __future__ import annotations

import json

from flask import current_app
from flask.json.provider import DefaultJSONProvider
from flask_smorest import abort
from webargs import core
from webargs.flaskparser import FlaskParser

MAX_DEPTH = 32
MAX_MEMBERS = 10_000


class BodyTooComplex(ValueError):
    """A JSON body that parses but that the API refuses to handle; the message says why."""


def load_json(data: str | bytes):
    """Parse JSON, refusing documents nested deeper than MAX_DEPTH, with an object or array of more than
    MAX_MEMBERS members, or with a lone surrogate (`"\\ud800"`: not text, and neither PostgreSQL nor Redis
    can store it)."""
    try:
        document = json.loads(data)
    except RecursionError:
        raise BodyTooComplex(f"The JSON body is nested deeper than {MAX_DEPTH} levels.") from None
    _check_shape(document)
    return document


def _check_shape(document) -> None:
    # Iterative, so that checking cannot itself run out of stack.
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if not value.isascii() and not _is_text(value):
                raise BodyTooComplex("A string in the JSON body holds a lone surrogate: it is not valid Unicode.")
            continue
        if isinstance(value, dict):
            members = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            members = value
        else:
            continue
        if depth > MAX_DEPTH:
            raise BodyTooComplex(f"The JSON body is nested deeper than {MAX_DEPTH} levels.")
        if len(value) > MAX_MEMBERS:
            kind = "An object" if isinstance(value, dict) else "An array"
            raise BodyTooComplex(f"{kind} in the JSON body has more than {MAX_MEMBERS} members.")
        pending.extend((member, depth + 1) for member in members if isinstance(member, str | dict | list))


def _is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, loading with the bounds of `load_json`."""

    def loads(self, s: str | bytes, **kwargs):
        return load_json(s)


MISSING_BODY = "This request needs a JSON body (Content-Type: application/json)."


def check_body(request, *, required: bool) -> None:
    """415 for a body sent as anything but JSON (a form would otherwise read as every field missing);
    422 when a required body is absent. An optional body may be left out."""
    if request.get_data(cache=True):
        if not core.is_json(request.mimetype):
            abort(415)
    elif required:
        abort(422, message=MISSING_BODY, errors={"json": ["Missing request body."]})


class Parser(FlaskParser):
    """webargs' parser for `blp.arguments`, loading JSON bodies with the app's bounded provider."""

    def _raw_load_json(self, req):
        if not core.is_json(req.mimetype):
            return core.missing
        try:
            return current_app.json.loads(req.get_data(cache=True))
        except BodyTooComplex as error:
            abort(400, message=str(error), errors={"json": [str(error)]})
