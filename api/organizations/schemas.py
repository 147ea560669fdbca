import marshmallow as ma

from api.extensions import Schema
from api.fields import Name
from shared.audit import service as audit
from shared.organizations.roles import ROLE_VALUES

ROLE = ma.fields.String(required=True, validate=ma.validate.OneOf(ROLE_VALUES))


class OrganizationIn(Schema):
    name = Name(required=True)


class OrganizationSummaryOut(Schema):
    id = ma.fields.UUID(required=True)
    name = ma.fields.String(required=True)
    role = ma.fields.String(required=True, metadata={"description": "Your role in this organization."})


class OrganizationOut(OrganizationSummaryOut):
    created_at = ma.fields.AwareDateTime(required=True, format="iso")
    invite_code = ma.fields.String(
        allow_none=True, metadata={"description": "The standing invite code (grants developer); admins only."}
    )


class JoinIn(Schema):
    invite_code = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=128))


class InviteIn(Schema):
    role = ma.fields.String(validate=ma.validate.OneOf(ROLE_VALUES), load_default="developer")
    max_uses = ma.fields.Integer(validate=ma.validate.Range(min=1, max=1_000_000), allow_none=True, load_default=None)
    expires_in_hours = ma.fields.Float(
        validate=ma.validate.Range(min=0, max=24 * 365, min_inclusive=False),
        allow_none=True,
        load_default=None,
        allow_nan=False,
    )


class IssuerOut(Schema):
    user_id = ma.fields.UUID(required=True)
    username = ma.fields.String(required=True)


class InviteOut(Schema):
    code = ma.fields.String(required=True)
    role = ma.fields.String(required=True)
    max_uses = ma.fields.Integer(allow_none=True, required=True)
    uses = ma.fields.Integer(required=True)
    expires_at = ma.fields.AwareDateTime(allow_none=True, required=True, format="iso")
    created_at = ma.fields.AwareDateTime(required=True, format="iso")
    issued_by = ma.fields.Nested(
        IssuerOut,
        required=True,
        allow_none=True,
        metadata={
            "description": "The admin who issued the code (null if the account is gone). The code admits only "
            "while they are an admin here, and dies when they leave, are removed or are demoted."
        },
    )
    standing = ma.fields.Boolean(
        required=True,
        metadata={"description": "Whether this is the organization's standing code (see POST .../invite-code)."},
    )


class MemberOut(Schema):
    user_id = ma.fields.UUID(required=True)
    username = ma.fields.String(required=True)
    role = ma.fields.String(required=True)
    joined_at = ma.fields.AwareDateTime(required=True, format="iso")


class RoleIn(Schema):
    role = ROLE


class AuditEventOut(Schema):
    at = ma.fields.AwareDateTime(required=True, format="iso")
    type = ma.fields.String(required=True, metadata={"description": "One of " + ", ".join(audit.TYPES) + "."})
    message = ma.fields.String(
        required=True,
        metadata={
            "description": "What changed, in one sentence: who joined by which invite as what, a role from what "
            "to what, a cluster's capacity from what to what. Invite codes appear as their first characters."
        },
    )
    actor = ma.fields.String(
        required=True,
        metadata={"description": "The username of who made the change (kept after their account is deleted)."},
    )
