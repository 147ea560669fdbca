import marshmallow as ma

from api.extensions import Schema
from api.fields import Name, Pattern


def _password(**options):
    return ma.fields.String(load_only=True, validate=ma.validate.Length(min=8, max=128), **options)


class RegisterIn(Schema):
    username = ma.fields.String(
        required=True,
        validate=Pattern(r"^[A-Za-z0-9_.-]{3,64}$", error="Use 3-64 characters among letters, digits and _ . -"),
    )
    email = ma.fields.Email(required=True, validate=ma.validate.Length(max=254))
    password = _password(
        required=True,
        metadata={"description": "8-128 characters; not one of the most common passwords, the username or the email."},
    )


class UserOut(Schema):
    id = ma.fields.UUID(dump_only=True)
    username = ma.fields.String(dump_only=True)
    email = ma.fields.String(dump_only=True)
    created_at = ma.fields.AwareDateTime(dump_only=True, format="iso")


class LoginIn(Schema):
    username = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=128))
    password = ma.fields.String(required=True, load_only=True, validate=ma.validate.Length(min=1, max=128))
    cookies = ma.fields.Boolean(
        load_default=False,
        metadata={
            "description": "For browser clients: set the tokens as HttpOnly cookies (with CSRF cookies) instead "
            "of returning them in the body."
        },
    )


class TokensOut(Schema):
    access_token = ma.fields.String(
        metadata={"description": "Absent in cookie mode: the tokens then travel only as HttpOnly cookies."}
    )
    refresh_token = ma.fields.String(
        metadata={
            "description": "The session's next refresh token. Single use: spending an already spent one ends the "
            "session. It never outlives the session (SESSION_MAX_DAYS after the login). Absent in cookie mode."
        }
    )
    token_type = ma.fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = ma.fields.Integer(required=True, metadata={"description": "Seconds until the access token expires."})


class MembershipOut(Schema):
    id = ma.fields.UUID(required=True)
    name = Name(required=True)
    role = ma.fields.String(required=True)


class MeOut(UserOut):
    organizations = ma.fields.List(ma.fields.Nested(MembershipOut), dump_only=True)


class PasswordChangeIn(Schema):
    current_password = ma.fields.String(
        required=True,
        load_only=True,
        validate=ma.validate.Length(min=1, max=128),
        metadata={"description": "Your password now, to prove it is you."},
    )
    new_password = _password(
        required=True,
        metadata={"description": "8-128 characters; not one of the most common passwords, the username or the email."},
    )


class AccountDeleteIn(Schema):
    password = ma.fields.String(
        required=True,
        load_only=True,
        validate=ma.validate.Length(min=1, max=128),
        metadata={"description": "The account's password, to prove it is you."},
    )
