"""Organizations, invites and members (API.md, "Organizations and membership")."""

from flask.views import MethodView

from api import ratelimit
from api.access import USER, current_member, current_user_id, member
from api.extensions import Blueprint, ErrorSchema
from api.organizations.schemas import (
    AuditEventOut,
    InviteIn,
    InviteOut,
    JoinIn,
    MemberOut,
    OrganizationIn,
    OrganizationOut,
    OrganizationSummaryOut,
    RoleIn,
)
from api.pagination import page_of, paginate
from shared.audit import service as audit
from shared.db import db
from shared.organizations import service as organizations
from shared.organizations.roles import Role

blp = Blueprint("organizations", __name__, url_prefix="/api/v1/organizations", description="Organizations and members.")


def _member_out(membership, username):
    return {
        "user_id": membership.user_id,
        "username": username,
        "role": membership.role,
        "joined_at": membership.joined_at,
    }


def _invite_out(invite, issuer_username):
    issuer = None if invite.created_by is None else {"user_id": invite.created_by, "username": issuer_username}
    return {
        "code": invite.code,
        "role": invite.role,
        "max_uses": invite.max_uses,
        "uses": invite.uses,
        "expires_at": invite.expires_at,
        "created_at": invite.created_at,
        "issued_by": issuer,
        "standing": invite.is_default,
    }


def _issued_invite_out(invite):
    return _invite_out(invite, organizations.username_of(session=db.session, user_id=invite.created_by))


@blp.route("")
class Organizations(MethodView):
    @blp.access(USER)
    @blp.arguments(OrganizationIn)
    @blp.response(201, OrganizationOut)
    @blp.alt_response(
        409,
        schema=ErrorSchema,
        description="You already belong to as many organizations as you may create "
        "(MAX_ORGANIZATIONS_PER_USER; the message names the limit).",
    )
    def post(self, body):
        """Create an organization; you become its admin."""
        organization, membership, invite = organizations.create(
            session=db.session, actor_id=current_user_id(), name=body["name"]
        )
        return {
            "id": organization.id,
            "name": organization.name,
            "role": membership.role,
            "invite_code": invite.code,
            "created_at": organization.created_at,
        }

    @blp.access(USER)
    @blp.response(200, OrganizationSummaryOut(many=True))
    @blp.paginate()
    def get(self, pagination_parameters):
        """Your organizations, with your role in each."""
        rows = organizations.list_for_user(session=db.session, user_id=current_user_id())
        return page_of([{"id": o.id, "name": o.name, "role": role} for o, role in rows], pagination_parameters)


@blp.route("/join")
class Join(MethodView):
    @blp.access(USER)
    @ratelimit.join
    @blp.arguments(JoinIn)
    @blp.response(200, OrganizationSummaryOut)
    @blp.alt_response(404, schema=ErrorSchema, description="Unknown, revoked, expired or used-up code.")
    @blp.alt_response(409, schema=ErrorSchema, description="You are already a member.")
    @blp.alt_response(429, schema=ErrorSchema, description="Too many wrong codes: wait before trying again.")
    def post(self, body):
        """Join an organization with an invite code, in the role the code grants."""
        organization, membership = organizations.join(
            session=db.session, user_id=current_user_id(), code=body["invite_code"]
        )
        return {"id": organization.id, "name": organization.name, "role": membership.role}


@blp.route("/<uuid:org_id>")
class OrganizationDetail(MethodView):
    @blp.access(member(Role.VIEWER))
    @blp.response(200, OrganizationOut)
    def get(self, org_id):
        """One of your organizations; admins also see its standing invite code."""
        organization = organizations.get(session=db.session, organization_id=org_id)
        me = current_member()
        body = {
            "id": organization.id,
            "name": organization.name,
            "role": me.role,
            "created_at": organization.created_at,
        }
        if Role(me.role).allows(Role.ADMIN):
            invite = organizations.default_invite(session=db.session, organization_id=org_id)
            body["invite_code"] = invite.code if invite else None
        return body


@blp.route("/<uuid:org_id>/invites")
class Invites(MethodView):
    @blp.access(member(Role.ADMIN))
    @blp.arguments(InviteIn, required=False)
    @blp.response(201, InviteOut)
    def post(self, body, org_id):
        """Issue an invite code granting `role`, optionally limited in uses and time.

        The code admits only while you are an admin of the organization: it dies when you leave, are
        removed or are demoted.
        """
        invite = organizations.create_invite(
            session=db.session,
            organization_id=org_id,
            actor_id=current_user_id(),
            role=Role(body["role"]),
            max_uses=body["max_uses"],
            expires_in_hours=body["expires_in_hours"],
        )
        return _issued_invite_out(invite)

    @blp.access(member(Role.ADMIN))
    @blp.response(200, InviteOut(many=True))
    @blp.paginate()
    def get(self, org_id, pagination_parameters):
        """The organization's usable invite codes, newest first, with who issued each."""
        rows = organizations.list_invites(session=db.session, organization_id=org_id)
        return page_of([_invite_out(invite, username) for invite, username in rows], pagination_parameters)


@blp.route("/<uuid:org_id>/invite-code")
class StandingInviteCode(MethodView):
    @blp.access(member(Role.ADMIN))
    @blp.response(201, InviteOut)
    def post(self, org_id):
        """Rotate the standing invite code: a new one (granting developer), issued by you; the old one dies.

        Also the way to get a standing code back after it was revoked, or died with the admin who issued it.
        """
        invite = organizations.rotate_default_invite(
            session=db.session, organization_id=org_id, actor_id=current_user_id()
        )
        return _issued_invite_out(invite)


@blp.route("/<uuid:org_id>/invites/<string:code>")
class InviteDetail(MethodView):
    @blp.access(member(Role.ADMIN))
    @blp.response(204)
    def delete(self, org_id, code):
        """Revoke an invite code, at once."""
        organizations.revoke_invite(session=db.session, organization_id=org_id, actor_id=current_user_id(), code=code)


@blp.route("/<uuid:org_id>/members")
class Members(MethodView):
    @blp.access(member(Role.VIEWER))
    @blp.response(200, MemberOut(many=True))
    @blp.paginate()
    def get(self, org_id, pagination_parameters):
        """The organization's members and their roles."""
        rows = organizations.list_members(session=db.session, organization_id=org_id)
        return page_of([_member_out(m, name) for m, name in rows], pagination_parameters)


@blp.route("/<uuid:org_id>/members/<uuid:user_id>")
class MemberDetail(MethodView):
    @blp.access(member(Role.ADMIN))
    @blp.arguments(RoleIn)
    @blp.response(200, MemberOut)
    @blp.alt_response(409, schema=ErrorSchema, description="The last admin cannot be demoted.")
    def patch(self, body, org_id, user_id):
        """Change a member's role; an admin demoted below admin loses the invite codes they issued."""
        membership = organizations.change_role(
            session=db.session,
            organization_id=org_id,
            actor_id=current_user_id(),
            user_id=user_id,
            role=Role(body["role"]),
        )
        return _member_out(membership, organizations.username_of(session=db.session, user_id=user_id))

    @blp.access(member(Role.VIEWER))
    @blp.response(204)
    @blp.alt_response(409, schema=ErrorSchema, description="The last admin cannot leave.")
    def delete(self, org_id, user_id):
        """Remove a member (admins), or leave the organization (anyone, for themselves).

        The invite codes the member issued die with the membership; the standing code does not unless they
        issued it: rotate it (POST .../invite-code) if they knew it.
        """
        organizations.remove_member(
            session=db.session, organization_id=org_id, actor_id=current_user_id(), user_id=user_id
        )


@blp.route("/<uuid:org_id>/events")
class AuditLog(MethodView):
    @blp.access(member(Role.ADMIN))
    @blp.response(200, AuditEventOut(many=True))
    @blp.paginate()
    def get(self, org_id, pagination_parameters):
        """The audit log, newest first: members joining, leaving, role changes and removals; invites issued,
        revoked, and the standing code rotated; clusters created, resized, renamed and deleted. Admins only."""
        page, total = audit.list_for_org(session=db.session, organization_id=org_id, **paginate(pagination_parameters))
        pagination_parameters.item_count = total
        return page
