"""Field types shared by the resource schemas."""

import math
import uuid

import marshmallow as ma

from shared.resources import from_units, to_units

NAME = ma.validate.Length(min=1, max=128)


class Pattern(ma.validate.Regexp):
    """A Regexp that must match the whole string, as in JSON Schema (Python's `$` also matches before a
    final newline, so `^x$` alone would let "x\\n" through while the spec refuses it)."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ma.ValidationError(self._format_error(value))
        return value


# No control characters (C0, DEL, C1) or line separators, and no blank at either end. In the spec as a
# pattern, so that clients and schemathesis know the rule exactly.
NAME_PATTERN = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f\u2028\u2029]*[^\s\x00-\x1f\x7f-\x9f])?$"


class Name(ma.fields.String):
    """A display name: 1-128 characters, no control characters, no leading or trailing blanks."""

    def __init__(self, **kwargs):
        super().__init__(
            validate=[
                NAME,
                Pattern(NAME_PATTERN, error="Use 1-128 characters, without control characters or blanks at the ends."),
            ],
            **kwargs,
        )


class Quantity(ma.fields.Field):
    """A non-negative JSON number with at most 3 decimals, loaded as exact integer units (x `scale`).

    Strings, booleans, NaN and infinities are refused: a resource request is a number, and exact.
    """

    default_error_messages = {
        "type": "Must be a number.",
        "finite": "Must be a finite number.",
        "decimals": "Use at most 3 decimals.",
        "range": "Must be between 0 and {maximum}.",
    }

    def __init__(self, *, scale: int, maximum: int, integer: bool = False, **kwargs):
        self.scale, self.maximum, self.integer = scale, maximum, integer
        kind = {"type": "integer"} if integer else {"type": "number", "multipleOf": 0.001}
        kwargs.setdefault("metadata", {}).update({**kind, "minimum": 0, "maximum": maximum})
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("type")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.make_error("finite")
        if self.integer and not isinstance(value, int):
            raise ma.ValidationError("Must be a whole number.")
        if not 0 <= value <= self.maximum:
            raise self.make_error("range", maximum=self.maximum)
        try:
            return to_units(value, self.scale)
        except ValueError:
            raise self.make_error("decimals") from None

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else from_units(value, self.scale)


# A Docker image reference: [registry[:port]/]path[:tag][@digest], with lower-case path components.
IMAGE_PATTERN = (
    # registry: localhost, a dotted host name, or any host with a port (else it is a path component)
    r"^(?:(?:localhost|[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)+)(?::[0-9]+)?/|[a-zA-Z0-9-]+:[0-9]+/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"
    r"(?:@sha256:[a-f0-9]{64})?$"
)


class ImageRef(ma.fields.String):
    def __init__(self, **kwargs):
        super().__init__(
            validate=[
                ma.validate.Length(min=1, max=255),
                Pattern(IMAGE_PATTERN, error="Not a Docker image reference (e.g. ghcr.io/acme/train:1.2)."),
            ],
            **kwargs,
        )


def _reject_non_numbers(field: ma.fields.Number, value):
    # JSON numbers only: marshmallow would take "5" or true as 5 and 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise field.make_error("invalid")


class StrictInteger(ma.fields.Integer):
    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        _reject_non_numbers(self, value)
        return super()._deserialize(value, attr, data, **kwargs)


class StrictFloat(ma.fields.Float):
    def __init__(self, **kwargs):
        super().__init__(allow_nan=False, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        _reject_non_numbers(self, value)
        return super()._deserialize(value, attr, data, **kwargs)


class DependencyRef(ma.fields.Field):
    """A deployment id or, in a batch, "#<index>" naming an earlier item of the same batch."""

    default_error_messages = {"invalid_uuid": "Not a valid UUID."}  # marshmallow's own, as for a single submit

    def __init__(self, **kwargs):
        kwargs.setdefault("metadata", {}).update(
            {"type": "string", "pattern": r"^(#[0-9]+|[0-9a-fA-F-]{32,36})$", "example": "#0"}
        )
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and value.startswith("#") and value[1:].isascii() and value[1:].isdigit():
            return "#" + str(int(value[1:]))
        if isinstance(value, uuid.UUID):
            return value
        try:
            return uuid.UUID(value)
        except (AttributeError, TypeError, ValueError):
            raise self.make_error("invalid_uuid") from None
