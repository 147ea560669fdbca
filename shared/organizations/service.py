"""Organizations, memberships and invites: who belongs where, with which role.

Every organization-scoped request goes through `require_member`: a caller who is not a member is told
"not found", exactly as if the object did not exist; a member whose role is too low is told "forbidden".
"""

from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.config import get_settings
from shared.errors import Conflict, Forbidden, LimitReached, NotFound
from shared.identity.models import User
from shared.organizations.models import Invite, Membership, Organization
from shared.organizations.roles import Role
from shared.timeutil import utcnow

ORGANIZATION_NOT_FOUND = "Organization not found."
INVITE_NOT_FOUND = "Unknown, revoked, expired or used-up invite code."


def new_invite_code() -> str:
    """192 random bits from `secrets`, URL-safe."""
    return secrets.token_urlsafe(24)


def membership(*, session: Session, organization_id: uuid.UUID, user_id: uuid.UUID) -> Membership | None:
    return session.get(Membership, (organization_id, user_id))


def require_member(
    *, session: Session, organization_id: uuid.UUID | None, user_id: uuid.UUID, role: Role, not_found: str
) -> Membership:
    """The caller's membership if its role allows `role`; NotFound (as for a missing object) if not a member."""
    member = (
        None
        if organization_id is None
        else membership(session=session, organization_id=organization_id, user_id=user_id)
    )
    if member is None:
        raise NotFound(not_found)
    if not Role(member.role).allows(role):
        raise Forbidden(f"Your role ({member.role}) may not do this; it needs {role.value} or higher.")
    return member


def create(*, session: Session, actor_id: uuid.UUID, name: str) -> tuple[Organization, Membership, Invite]:
    """A new organization whose creator is its admin, with a default invite code granting developer.

    409 if the creator already belongs to MAX_ORGANIZATIONS_PER_USER organizations (any role: joining by
    invite is not limited, the inviting organization counts against its own creator)."""
    # The user's row lock serializes one user's concurrent creations, so the count below holds.
    session.execute(select(User.id).where(User.id == actor_id).with_for_update(key_share=True))
    most = get_settings().max_organizations_per_user
    belongs_to = session.scalar(select(func.count()).where(Membership.user_id == actor_id))
    if belongs_to >= most:
        session.rollback()
        raise LimitReached(
            f"You belong to {belongs_to} organizations, the limit (MAX_ORGANIZATIONS_PER_USER = {most}): "
            "leave one before creating another."
        )
    organization = Organization(id=uuid.uuid4(), name=name)
    session.add(organization)
    session.flush()
    member = Membership(organization_id=organization.id, user_id=actor_id, role=Role.ADMIN.value)
    invite = Invite(
        code=new_invite_code(),
        organization_id=organization.id,
        role=Role.DEVELOPER.value,
        is_default=True,
        created_by=actor_id,
    )
    session.add_all([member, invite])
    session.commit()
    return organization, member, invite


def list_for_user(*, session: Session, user_id: uuid.UUID) -> list[tuple[Organization, str]]:
    """The user's organizations with the user's role in each, oldest first."""
    rows = session.execute(
        select(Organization, Membership.role)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Membership.user_id == user_id)
        .order_by(Organization.created_at, Organization.id)
    )
    return [(organization, role) for organization, role in rows]


def get(*, session: Session, organization_id: uuid.UUID) -> Organization:
    organization = session.get(Organization, organization_id)
    if organization is None:
        raise NotFound(ORGANIZATION_NOT_FOUND)
    return organization


def default_invite(*, session: Session, organization_id: uuid.UUID) -> Invite | None:
    """The organization's standing invite code, unless it has been revoked."""
    return session.scalar(
        select(Invite).where(Invite.organization_id == organization_id, Invite.is_default, Invite.revoked_at.is_(None))
    )


def _usable(invite: Invite) -> bool:
    now = utcnow()
    return (
        invite.revoked_at is None
        and (invite.expires_at is None or invite.expires_at > now)
        and (invite.max_uses is None or invite.uses < invite.max_uses)
    )


def join(*, session: Session, user_id: uuid.UUID, code: str) -> tuple[Organization, Membership]:
    """Join by invite code, with the role it grants. The invite row is locked: `max_uses` holds under races."""
    invite = session.scalar(select(Invite).where(Invite.code == code).with_for_update())
    if invite is None or not _usable(invite):
        session.rollback()
        raise NotFound(INVITE_NOT_FOUND)
    if membership(session=session, organization_id=invite.organization_id, user_id=user_id) is not None:
        session.rollback()
        raise Conflict("You are already a member of this organization.")
    member = Membership(organization_id=invite.organization_id, user_id=user_id, role=invite.role)
    invite.uses += 1
    session.add(member)
    session.commit()
    return session.get(Organization, invite.organization_id), member


def create_invite(
    *,
    session: Session,
    organization_id: uuid.UUID,
    actor_id: uuid.UUID,
    role: Role,
    max_uses: int | None = None,
    expires_in_hours: float | None = None,
) -> Invite:
    expires_at = utcnow() + timedelta(hours=expires_in_hours) if expires_in_hours is not None else None
    invite = Invite(
        code=new_invite_code(),
        organization_id=organization_id,
        role=role.value,
        max_uses=max_uses,
        expires_at=expires_at,
        created_by=actor_id,
    )
    session.add(invite)
    session.commit()
    return invite


def list_invites(*, session: Session, organization_id: uuid.UUID) -> list[Invite]:
    """Every invite of the organization that can still be used, newest first."""
    invites = session.scalars(
        select(Invite).where(Invite.organization_id == organization_id).order_by(Invite.created_at.desc())
    )
    return [invite for invite in invites if _usable(invite)]


def revoke_invite(*, session: Session, organization_id: uuid.UUID, code: str) -> None:
    invite = session.scalar(
        select(Invite).where(Invite.code == code, Invite.organization_id == organization_id).with_for_update()
    )
    if invite is None or invite.revoked_at is not None:
        session.rollback()
        raise NotFound("No such invite code in this organization.")
    invite.revoked_at = utcnow()
    session.commit()


def list_members(*, session: Session, organization_id: uuid.UUID) -> list[tuple[Membership, str]]:
    rows = session.execute(
        select(Membership, User.username)
        .join(User, User.id == Membership.user_id)
        .where(Membership.organization_id == organization_id)
        .order_by(Membership.joined_at, User.username)
    )
    return [(member, username) for member, username in rows]


def _lock_organization(session: Session, organization_id: uuid.UUID) -> None:
    # Serializes changes to an organization's admins: two admins demoting each other at once must
    # not both succeed and leave it with none.
    session.execute(select(Organization.id).where(Organization.id == organization_id).with_for_update(key_share=True))


def _target(session: Session, organization_id: uuid.UUID, user_id: uuid.UUID) -> Membership:
    member = membership(session=session, organization_id=organization_id, user_id=user_id)
    if member is None:
        session.rollback()
        raise NotFound("No such member in this organization.")
    return member


def _admin_count(session: Session, organization_id: uuid.UUID) -> int:
    return session.scalar(
        select(func.count()).where(Membership.organization_id == organization_id, Membership.role == Role.ADMIN.value)
    )


def change_role(*, session: Session, organization_id: uuid.UUID, user_id: uuid.UUID, role: Role) -> Membership:
    """Set a member's role; the last admin cannot be demoted."""
    _lock_organization(session, organization_id)
    member = _target(session, organization_id, user_id)
    if member.role == Role.ADMIN.value and role != Role.ADMIN and _admin_count(session, organization_id) == 1:
        session.rollback()
        raise Conflict("The last admin cannot be demoted: make another member admin first.")
    member.role = role.value
    session.commit()
    return member


def remove_member(*, session: Session, actor: Membership, user_id: uuid.UUID) -> None:
    """An admin removes a member, or a member leaves; the last admin cannot leave."""
    organization_id = actor.organization_id
    if actor.user_id != user_id and not Role(actor.role).allows(Role.ADMIN):
        raise Forbidden("Only an admin can remove another member; you may remove yourself.")
    _lock_organization(session, organization_id)
    member = _target(session, organization_id, user_id)
    if member.role == Role.ADMIN.value and _admin_count(session, organization_id) == 1:
        session.rollback()
        raise Conflict("The last admin cannot leave: make another member admin first.")
    session.delete(member)
    session.commit()


def username_of(*, session: Session, user_id: uuid.UUID) -> str:
    return session.scalar(select(User.username).where(User.id == user_id))
