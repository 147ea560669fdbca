import marshmallow as ma

from api.extensions import Schema
from api.fields import Name, Pattern


class RegisterIn(Schema):
    username = ma.fields.String(
        required=True,
        validate=Pattern(r"^[A-Za-z0-9_.-]{3,64}$", error="Use 3-64 characters among letters, digits and _ . -"),
    )
    email = ma.fields.Email(required=True, validate=ma.validate.Length(max=254))
    password = ma.fields.String(required=True, load_only=True, validate=ma.validate.Length(min=8, max=128))


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
        metadata={"description": "Also set the tokens as HttpOnly cookies (with CSRF cookies) for browser clients."},
    )


class TokensOut(Schema):
    access_token = ma.fields.String(required=True)
    refresh_token = ma.fields.String(metadata={"description": "A new refresh token: the one used is now revoked."})
    token_type = ma.fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = ma.fields.Integer(required=True, metadata={"description": "Seconds until the access token expires."})


class MembershipOut(Schema):
    id = ma.fields.UUID(required=True)
    name = Name(required=True)
    role = ma.fields.String(required=True)


class MeOut(UserOut):
    organizations = ma.fields.List(ma.fields.Nested(MembershipOut), dump_only=True)
